"""`audiostyle evaluate BUNDLE DATA`: score a bundle on the paired test split beside the baselines."""

from __future__ import annotations

import argparse

from audiostyle.platform.cli.argtypes import add_steady_pitch_option, positive_int

# datasets/recording_conditions.CONDITIONS, named here so `--help` imports no numpy (tests/test_cli.py checks
# the two agree)
INPUT_CONDITIONS = ("vibrato", "soft_attack", "bow_noise", "room", "tilt_up", "tilt_down", "hiss", "quiet", "rate_44k")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate a bundle on the paired test split",
        description="Transfer every paired test piece from each instrument to each other one and score it: "
                    "pitch accuracy and chroma similarity against the input, note onset F1, multi-resolution "
                    "STFT distance to the paired target rendering, harmonicity and sharpness relative to it, "
                    "P(target instrument) from a timbre judge trained on held-out SoundFonts (checked first on "
                    "the same pieces: the oracle, the input unchanged and degraded targets), and the research's "
                    "own metrics; each beside 'transcribe and re-render' (Basic Pitch), 'input unchanged', "
                    "'right instrument, wrong notes' and the oracle. An instrument of the bundle known from "
                    "recordings alone (its folder from `data add`, not in DATA) is a target too: scored on "
                    "content against the input and P(target) from a judge that learns it from those "
                    "recordings (no paired target, so no MR-STFT). Writes results.json and index.html "
                    "(spectrograms, audio players) into OUT.")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder from `audiostyle checkpoints export`")
    p.add_argument("data", metavar="DATA", help="data root holding <instrument>/ shards and notes/ (e.g. data/demo)")
    p.add_argument("--out", default="evaluation", metavar="DIR", help="output folder (default: evaluation/)")
    p.add_argument("--instruments", nargs="+", metavar="NAME", help="only these instruments (default: all shared)")
    p.add_argument("--max-pieces", type=positive_int, default=None, help="only the first N test pieces")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--f0", choices=("yin", "pyin"), default="yin",
                   help="pitch tracker for pitch accuracy (pyin is more accurate and ~20x slower)")
    p.add_argument("--no-baselines", action="store_true", help="skip transcribe-and-re-render (Basic Pitch)")
    p.add_argument("--input-soundfont", metavar="NAME", default=None,
                   help="take the inputs from the heldout split rendered with this SoundFont (e.g. fluidr3): "
                        "the same test pieces by a player the model never heard; targets stay the test split's")
    p.add_argument("--input-condition", metavar="NAME", default=None,
                   choices=INPUT_CONDITIONS,
                   help="put the inputs through a playing or recording condition first: vibrato (+-30 cents at "
                        "5.5 Hz), soft_attack (rises spread over 150 ms), bow_noise (noise following the spectrum, "
                        "12 dB under it), room (RT60 0.7 s), tilt_up / tilt_down "
                        "(EQ tilt +-6 dB), hiss (30 dB SNR), quiet (-20 dB), rate_44k (arrives at 44.1 kHz)")
    add_steady_pitch_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audiostyle.platform.core.output_paths import check_output_folder
    from audiostyle.platform.evaluation.evaluate import evaluate

    check_output_folder(args.out)  # before minutes of transfers, not at the first write
    results = evaluate(args.bundle, args.data, out_dir=args.out, instruments=args.instruments,
                       max_pieces=args.max_pieces, device=args.device, f0_method=args.f0,
                       baselines=not args.no_baselines, input_soundfont=args.input_soundfont,
                       input_condition=args.input_condition, steady=args.steady_pitch)
    metrics = ["pitch_acc", "chroma_cos", "mr_stft", "harmonicity", "sharpness", "p_target"]
    print(f"{'system':<20}" + "".join(f"{m:>12}" for m in metrics))
    for system, scores in results["summary"].items():
        print(f"{system:<20}" + "".join(f"{'-' if scores[m] is None else format(scores[m], '.3f'):>12}" for m in metrics))
    checks = results["classifier"]["checks"]
    print("timbre judge: " + ("trusted on these pieces" if checks["trusted"] else "NOT trusted (" + "; ".join(checks["failed"]) + ")")
          + " | P(instrument): " + ", ".join(f"{k} {v:.2f}" for k, v in checks["p_instrument"].items()))
    for note in results.get("notes", []):
        print(f"note: {note}")
    print(f"real-time factor {results['realtime_factor']:.3f} on {results['device']}")
    print(f"results: {Path(args.out) / 'results.json'}\nreport:  {Path(args.out) / 'index.html'}")
    return 0
