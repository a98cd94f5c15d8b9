"""Benchmark: does the sweep's objective rank trained models as `audiostyle evaluate` ranks them?

Run: `python tests/benchmarks/bench_sweep_objective.py BUNDLE [BUNDLE ...] [--data data/players]
[--validate-on musescore] [--evaluate-on fluidr3] [--max-pieces 2] [--out DIR]`.

A sweep is only as good as the number it ranks trials by. For each bundle (models of different recipes or
budgets, standing in for a sweep's trials) this computes, on one data root for all of them:
  val/cross_recon          transfer loss on the val pairs as the training players played them (what the
                           recipe's checkpoints are picked by)
  val/unseen_cross_recon   the same on the val pieces as a held-out set played them (`data.val_unseen_players`,
                           what experiments/sweep_any_player.yaml ranks by; training/unseen_validation.py)
and `evaluate`'s MR-STFT to the target and P(target) on the test pieces as another held-out set played them,
then Spearman's rho of each objective with each evaluation metric over the bundles (oriented so +1 means the
objective puts the bundles in the evaluation's order). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def objectives(bundle: Path, data_root: Path, player: str) -> dict[str, float]:
    """Both validation objectives of `bundle`'s model, its instruments read from `data_root`."""
    import torch

    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.bundles.load import load_bundle
    from audiostyle.platform.config.loader import with_settings
    from audiostyle.platform.training.unseen_validation import METRIC, UnseenPairValidation

    model, cfg, _ = load_bundle(bundle)
    settings = {"data.root": str(data_root), "data.pairs": str(data_root / "pairs"),
                "data.val_unseen_players": [player]}
    settings.update({f"instruments.{i}.data": str(data_root / spec.name) for i, spec in enumerate(cfg.instruments)})
    cfg = with_settings(cfg, settings)
    with torch.no_grad():
        unseen = UnseenPairValidation.from_config(cfg).metrics(model, rank=0, world=1, device=torch.device("cpu"))
        total, count = 0.0, 0
        for batch in make_loader(cfg, "val", seed=cfg.seed):
            total += model.transfer_loss(batch["pair_source"], batch["pair_target"], batch["pair_target_label"])
            count += 1
    return {"val/cross_recon": total / max(count, 1), METRIC: unseen[METRIC]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=Path("data/players"))
    parser.add_argument("--validate-on", default="musescore", help="held-out set of the unseen objective")
    parser.add_argument("--evaluate-on", default="fluidr3", help="held-out set of the evaluation's inputs")
    parser.add_argument("--max-pieces", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from scipy.stats import spearmanr

    from audiostyle.platform.evaluation.evaluate import evaluate

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_sweep_objective_"))
    rows = {}
    for bundle in args.bundles:
        row = objectives(bundle, args.data.resolve(), args.validate_on)
        results = evaluate(bundle, args.data, out_dir=out / bundle.name, max_pieces=args.max_pieces, report=True,
                           progress=False, baselines=False, input_soundfont=args.evaluate_on)
        model = results["summary"]["model"]
        row.update({"mr_stft": model["mr_stft"], "p_target": model["p_target"]})
        rows[bundle.name] = row
        print(bundle.name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)

    print(f"\n{'bundle':<22}{'val/cross_recon':>17}{'val/unseen_cross_recon':>24}{'MR-STFT':>9}{'P(target)':>11}")
    for name, r in rows.items():
        print(f"{name:<22}{r['val/cross_recon']:>17.4f}{r['val/unseen_cross_recon']:>24.4f}{r['mr_stft']:>9.3f}"
              f"{r['p_target']:>11.3f}")
    print(f"\nSpearman's rho over {len(rows)} bundles, oriented (+1: the objective, lower first, orders the bundles "
          "as the metric, better first):")
    for objective in ("val/cross_recon", "val/unseen_cross_recon"):
        for metric, sign in (("mr_stft", 1), ("p_target", -1)):
            rho = spearmanr([r[objective] for r in rows.values()], [r[metric] for r in rows.values()]).statistic
            print(f"  {objective:<24} vs {metric:<9} {sign * rho:+.2f}")
    (out / "objective_ranks.json").write_text(json.dumps(rows, indent=2))
    print(f"\nresults: {out / 'objective_ranks.json'} (inputs {args.evaluate_on}, validation {args.validate_on}, "
          f"data {args.data})")


if __name__ == "__main__":
    main()
