"""`audiostyle quickstart`: the whole platform end to end in one command, on the embedded local Ray.

It does, in-process, what the user jobs do one by one: render demo instruments from SoundFonts into
WebDataset shards (`data demo`), train the recipe that transfers at a first-run budget (`train`,
experiments/first_run.yaml), pick the best checkpoint and export it as a bundle (`checkpoints export`),
transfer a held-out test clip to the other instrument (`transfer`), and judge it (`evaluate` on that
clip's piece: P(target instrument) and chroma against the input, beside the input unchanged, with the
HTML report). Each step prints the equivalent command, so the quickstart doubles as a tour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from audiostyle.platform.cli.argtypes import positive_int, positive_seconds

DEFAULT_EXPERIMENT = "experiments/first_run.yaml"
DEFAULT_SECONDS = 180.0  # demo audio per instrument: enough train pieces for 400 steps of pairs
NEXT_STEPS = """
Next: the full recipe (six times the steps, about half an hour here) and, for inputs from players and rooms
it never heard, experiments/any_player.yaml:
  audiostyle data demo --minutes 20 --instruments piano,violin,cello --players timgm6mb,csound --out data/players
  audiostyle train experiments/any_player.yaml
  audiostyle checkpoints export runs/any_player --metric val/cross_recon --out bundles/any_player
  audiostyle evaluate bundles/any_player data/players --input-soundfont fluidr3 --out reports/any_player"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="render demo data, train briefly, export the best checkpoint and transfer a clip",
        description="Run the whole platform end to end on an embedded local Ray instance: render piano and "
                    "violin from SoundFonts, shard them, train a short curriculum run, export the best "
                    "checkpoint as a bundle, transfer a test clip from piano to violin and judge it. About "
                    "seven minutes on a two-core laptop CPU. Re-running reuses the data and resumes the run.",
        epilog="example: audiostyle quickstart train.max_steps=200 --workers 2",
    )
    p.add_argument("overrides", nargs="*", metavar="a.b=c", help="overrides for the experiment YAML")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help=f"experiment YAML (default {DEFAULT_EXPERIMENT})")
    p.add_argument("--data", default="data/demo", help="where the demo instruments are rendered (default data/demo)")
    p.add_argument("--out", default="out/quickstart", help="bundle and transferred audio (default out/quickstart)")
    p.add_argument("--workers", type=positive_int, default=None, help="Ray Train workers (default: the YAML's scaling)")
    p.add_argument("--seconds", type=positive_seconds, default=DEFAULT_SECONDS,
                   help=f"seconds of demo audio per instrument (default: {DEFAULT_SECONDS:g})")
    p.add_argument("--no-evaluate", action="store_true", help="skip judging the transferred clip")
    p.set_defaults(func=run)


def _step(title: str, command: str) -> None:
    print(f"\n== {title}\n   (same as: {command})", flush=True)


def run(args: argparse.Namespace) -> int:
    import soundfile as sf

    from audiostyle.datasets.paired import load_paired_test
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.checking.checked_load import load_checked_experiment as load_experiment
    from audiostyle.platform.checkpoints.index import best_checkpoint
    from audiostyle.platform.cli.submit import run_option_overrides
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
    cfg = load_experiment(args.experiment, [f"data.root={data_root}", *args.overrides, *run_option_overrides(args)])
    source, target = cfg.instrument_names[0], cfg.instrument_names[1]

    _step("1/5 render demo instruments", f"audiostyle data demo --out {args.data} --instruments {','.join(cfg.instrument_names)}")
    prepare_demo(data_root, instruments=tuple(cfg.instrument_names), seconds_per_instrument=args.seconds,
                 seed=cfg.seed, progress=True)

    _step("2/5 train on the embedded local Ray", f"audiostyle train {args.experiment} data.root={args.data}")
    run_training(cfg)

    storage = Path(cfg.run.storage_path).resolve() / cfg.run_name
    metric, mode = cfg.train.checkpoint_metric, cfg.train.checkpoint_mode
    _step("3/5 export the best checkpoint", f"audiostyle checkpoints export {storage} --metric {metric} --out {out / 'bundle'}")
    best = best_checkpoint(storage, metric, mode)
    print(f"   best: {best.location} (step {best.step}, {metric}={best.value(metric):.4f})")
    bundle = export_bundle(best.location, out / "bundle", data_root=data_root, overwrite=True)
    print(f"   bundle: {bundle}")

    _step("4/5 transfer a test clip", f"audiostyle transfer {out / 'bundle'} --to {target} <clip> -o {out}")
    item = load_paired_test(data_root, [source, target])[0]
    clip = out / f"{item.piece_id}.{source}.wav"
    clip.parent.mkdir(parents=True, exist_ok=True)
    sf.write(clip, item.audio[source], item.sample_rate)
    written = transfer_files(bundle, [clip], target, out_dir=out, log=print)
    if not args.no_evaluate:
        _step("5/5 judge the transfer", f"audiostyle evaluate {out / 'bundle'} {args.data} --max-pieces 1 "
                                        f"--instruments {source} {target} --out {out / 'report'}")
        print(verdict(judge_clip(bundle, data_root, out / "report", source, target), source, target))
    print(f"\nDone. Listen to {clip} and {written[0]}; the paired {target} rendering of the same notes is the "
          f"reference. Report: {out / 'report' / 'index.html'}")
    print(NEXT_STEPS)
    return 0


def judge_clip(bundle: Path, data_root: Path, out: Path, source: str, target: str) -> dict:
    """`evaluate` on the first test piece (the transferred clip's), both directions, without baselines."""
    from audiostyle.platform.evaluation.evaluate import evaluate

    return evaluate(bundle, data_root, out_dir=out, instruments=[source, target], max_pieces=1, baselines=False,
                    progress=False)


def verdict(results: dict, source: str, target: str) -> str:
    """One line: the transfer's P(target) and chroma against the input, beside the input unchanged and the
    oracle, and whether the judge earned trust on the piece first."""
    scores = results["pairs"][f"{source}->{target}"]
    model, identity, oracle = scores["model"], scores["identity"], scores["oracle"]
    trusted = results["classifier"]["checks"]["trusted"]
    passes = model["p_target"] >= 0.8 and model["chroma_cos"] >= 0.9 * oracle["chroma_cos"]
    return (f"   {source} -> {target}: P({target}) {model['p_target']:.2f} (input unchanged {identity['p_target']:.2f}), "
            f"chroma vs the input {model['chroma_cos']:.2f} (oracle {oracle['chroma_cos']:.2f}): "
            + ("sounds like the target and keeps the notes" if passes else "does not pass the judge yet")
            + ("" if trusted else " [the judge failed its own checks on this piece: see the report]"))
