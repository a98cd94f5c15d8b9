"""`audiostyle quickstart`: the whole platform end to end in one command, on the embedded local Ray.

It does, in-process, what the four user jobs do one by one: render demo instruments from SoundFonts
into WebDataset shards (`data demo`), train a short curriculum run (`train`), pick the best checkpoint
and export it as a bundle (`checkpoints export`), and transfer a held-out test clip to the other
instrument (`transfer`). Each step prints the equivalent command, so the quickstart doubles as a tour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from audiostyle.platform.cli.argtypes import positive_int, positive_seconds

DEFAULT_EXPERIMENT = "experiments/quickstart.yaml"
TRANSFER_RECIPE = "experiments/paired_spectral.yaml"
SMOKE_TEST_NOTE = f"""
Note: the quickstart's model is a smoke test of the pipeline (a tiny research model, a minute of training):
it does not transfer yet, and its output will not sound like the target. The recipe that does, on this
CPU in about half an hour, is {TRANSFER_RECIPE}:
  audiostyle data demo --minutes 20 --out data/demo
  audiostyle train {TRANSFER_RECIPE}
  audiostyle checkpoints export runs/paired_spectral --metric val/cross_recon --out bundles/paired_spectral
  audiostyle evaluate bundles/paired_spectral data/demo --out reports/paired_spectral"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="render demo data, train briefly, export the best checkpoint and transfer a clip",
        description="Run the whole platform end to end on an embedded local Ray instance: render piano and "
                    "violin from SoundFonts, shard them, train a short curriculum run, export the best "
                    "checkpoint as a bundle and transfer a test clip from piano to violin. Takes a few "
                    "minutes on a laptop CPU. Re-running reuses the data and resumes the run.",
        epilog="example: audiostyle quickstart train.max_steps=200 --workers 2",
    )
    p.add_argument("overrides", nargs="*", metavar="a.b=c", help="overrides for the experiment YAML")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"experiment YAML (default {DEFAULT_EXPERIMENT})")
    p.add_argument("--data", default="data/demo", help="where the demo instruments are rendered (default data/demo)")
    p.add_argument("--out", default="out/quickstart", help="bundle and transferred audio (default out/quickstart)")
    p.add_argument("--workers", type=positive_int, default=None, help="Ray Train workers (default: the YAML's scaling)")
    p.add_argument("--seconds", type=positive_seconds, default=None,
                   help="seconds of demo audio per instrument (default: the renderer's CI-sized set)")
    p.set_defaults(func=run)


def _step(title: str, command: str) -> None:
    print(f"\n== {title}\n   (same as: {command})", flush=True)


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from audiostyle.datasets.paired import load_paired_test
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.checking.checked_load import load_checked_experiment as load_experiment
    from audiostyle.platform.checkpoints.index import best_checkpoint
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.core.output_paths import check_output_folder
    from audiostyle.platform.data.prepare import prepare_demo
    from audiostyle.platform.inference.transfer import transfer_files
    from audiostyle.platform.training.driver import run_training

    if not Path(args.experiment).is_file():
        raise ConfigError(f"file not found: {args.experiment}",
                          hint="run the quickstart from the repository root, or pass --experiment PATH")
    data_root, out = Path(args.data).resolve(), Path(args.out).resolve()
    check_output_folder(data_root, option="--data")
    check_output_folder(out)
    cfg = load_experiment(args.experiment, [f"data.root={data_root}", *args.overrides])
    source, target = cfg.instrument_names[0], cfg.instrument_names[1]

    _step("1/4 render demo instruments", f"audiostyle data demo --out {args.data} --instruments {','.join(cfg.instrument_names)}")
    prepare_demo(data_root, instruments=tuple(cfg.instrument_names), seconds_per_instrument=args.seconds,
                seed=cfg.seed, progress=True)

    _step("2/4 train on the embedded local Ray", f"audiostyle train {args.experiment} data.root={args.data}")
    run_training(cfg, workers=args.workers)

    storage = Path(cfg.run.storage_path).resolve() / cfg.run_name
    metric, mode = cfg.train.checkpoint_metric, cfg.train.checkpoint_mode
    _step("3/4 export the best checkpoint", f"audiostyle checkpoints export {storage} --metric {metric} --out {out / 'bundle'}")
    best = best_checkpoint(storage, metric, mode)
    print(f"   best: {best.location} (step {best.step}, {metric}={best.value(metric):.4f})")
    bundle = export_bundle(best.location, out / "bundle", data_root=data_root, overwrite=True)
    print(f"   bundle: {bundle}")

    _step("4/4 transfer a test clip", f"audiostyle transfer {out / 'bundle'} --to {target} <clip> -o {out}")
    item = load_paired_test(data_root, [source, target])[0]
    clip = out / f"{item.piece_id}.{source}.wav"
    clip.parent.mkdir(parents=True, exist_ok=True)
    sf.write(clip, item.audio[source], item.sample_rate)
    written = transfer_files(bundle, [clip], target, out_dir=out, log=print)
    print(f"\nDone. Listen to {clip} and {written[0]}; the paired {target} rendering of the same notes is the "
          f"reference. Next: `audiostyle evaluate {bundle} {args.data}`.")
    if Path(args.experiment).resolve() == Path(DEFAULT_EXPERIMENT).resolve():
        print(SMOKE_TEST_NOTE)
    return 0
