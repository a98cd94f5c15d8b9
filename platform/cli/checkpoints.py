"""`audiostyle checkpoints list|best|export STORAGE`: find, rank and export checkpoints of runs and sweeps."""

from __future__ import annotations

import argparse

from audiostyle.platform.cli.argtypes import non_negative_int
from audiostyle.platform.core.modes import MODES

EPILOG = """examples:
  audiostyle checkpoints list runs/
  audiostyle checkpoints best runs/ --metric val/style_acc --mode max
  audiostyle checkpoints export runs/ --metric val/recon --mode min --out bundles/piano_violin
  audiostyle checkpoints export s3://bucket/runs --out bundles/best --data data/demo
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "checkpoints", help="list, rank and export checkpoints across runs and sweeps",
        description="List, rank and export the checkpoints under a storage location (the run.storage_path of "
                    "training runs and sweeps: a local folder, NFS path or object-store URI such as s3://...). "
                    "`export` writes the best checkpoint (or --checkpoint) as a self-contained bundle: weights "
                    "(safetensors), resolved config, normalization statistics, instrument list, style "
                    "prototypes computed on the training set, and provenance.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("list", "best", "export"), help="what to do")
    p.add_argument("storage", metavar="STORAGE", help="storage location holding runs (or one checkpoint folder)")
    p.add_argument("--metric", default="val/recon", help="reported metric to rank by (default: val/recon)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="whether lower or higher is better (default: max for *acc*, min otherwise)")
    p.add_argument("--out", metavar="DIR", help="export: the bundle folder to create")
    p.add_argument("--checkpoint", metavar="PATH", help="export: this checkpoint instead of the best one")
    p.add_argument("--data", metavar="ROOT",
                   help="export: data root holding <instrument>/ shards, for the training-set prototypes "
                        "(default: the instrument paths in the run's config)")
    p.add_argument("--overwrite", action="store_true", help="export: replace an existing bundle folder")
    p.add_argument("--top", type=non_negative_int, default=0, help="list: only the N best by --metric")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiostyle.platform.checkpoints.index import format_table, rank, scan_checkpoints
    from audiostyle.platform.core.errors import CheckpointError
    from audiostyle.platform.core.modes import default_mode

    mode = args.mode or default_mode(args.metric)
    if args.action == "export" and args.checkpoint:
        return _export(args.checkpoint, args, metrics=None)
    skipped: list[str] = []
    records = scan_checkpoints(args.storage, skipped=skipped)
    for line in skipped:
        print(f"skipped {line}")
    if not records:
        raise CheckpointError(f"{args.storage}: no checkpoints found (folders holding state.json and model.safetensors)")
    if args.action == "list":
        shown = rank(records, args.metric, mode) if args.top else records
        if args.top:
            shown = shown[: args.top]
        metrics = sorted({k for r in records for k in r.metrics if k.startswith("val/")}) or [args.metric]
        print(format_table(shown, metrics))
        damaged = sum(1 for r in records if r.damage)
        note = f" ({damaged} damaged: `best` and `export` skip them)" if damaged else ""
        print(f"{len(records)} checkpoints in {len({r.run for r in records})} runs{note}")
        return 0
    best = rank(records, args.metric, mode)[0]
    if args.action == "best":
        print(f"best by {args.metric} ({mode}): {best.value(args.metric):.6g}")
        print(f"  run {best.run}, step {best.step}, phase {best.phase}")
        print(best.location)
        return 0
    return _export(best.location, args, metrics=best.metrics)


def _export(location: str, args: argparse.Namespace, metrics: dict | None) -> int:
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.bundles.load import bundle_summary, read_bundle_meta
    from audiostyle.platform.core.errors import CheckpointError

    if not args.out:
        raise CheckpointError("export needs --out DIR (the bundle folder to create)")
    print(f"exporting {location}")
    out = export_bundle(location, args.out, data_root=args.data, overwrite=args.overwrite, metrics=metrics)
    print(f"bundle written to {out}")
    print(bundle_summary(read_bundle_meta(out)))
    return 0
