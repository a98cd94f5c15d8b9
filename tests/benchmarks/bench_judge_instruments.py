"""Benchmark: which instruments can the evaluation's judge recognise when a sound set it never heard plays them?

Run: `python tests/benchmarks/bench_judge_instruments.py [--data DIR] [--instruments flute,clarinet,...]
[--seconds 600]`, on a demo rendered with those instruments and the held-out sets installed, e.g.
`audiostyle data demo --minutes 8 --instruments piano,violin,flute,clarinet,trumpet,oboe,alto_sax --chords 0.3
--out data/judge_candidates` (2 min).

P(target) counts only where the judge earns trust: the oracle (the test pieces as the reference set plays them,
the hidden targets of an evaluation) must get P >= 0.9 from a judge that learnt the instrument from the other
sets alone (platform/evaluation/judge.py). Whether it can depends on the instrument: where the sound sets' samples
of it disagree, no judge learnt from some of them recognises another's. For each candidate X this fits the judge
on (piano, violin, X) as `evaluate` does and prints P(X) of X's oracle, P(X) of the piano's and the violin's
renderings (the input unchanged), and what X's oracle is taken for; the piano's and violin's own oracles, in the
same run, are the baseline. (evaluate's degraded-target checks come on top, on the test pieces it scores.) Use it to choose the instrument of a walk-through or a test before training on it.
Asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22_050


def oracle_clips(root: Path, name: str) -> list[np.ndarray]:
    """The test split of instrument `name` (the reference set's renderings: every evaluation's oracle)."""
    from audiostyle.datasets.audio_io import to_rate_float32
    from audiostyle.datasets.manifest import iter_split_audio

    return [to_rate_float32(a, sr, SAMPLE_RATE) for _, a, sr, _ in iter_split_audio(root / name, "test")]


def judge_row(root: Path, candidate: str, seconds: float, cache: dict[str, list[np.ndarray]]) -> dict[str, dict]:
    """name -> mean P(class) of its test pieces, for a judge fit on piano, violin and `candidate`."""
    from audiostyle.platform.evaluation.judge import train_timbre_classifier

    instruments = ["piano", "violin", candidate]
    clf, _ = train_timbre_classifier(root, instruments, SAMPLE_RATE, max_seconds=seconds)
    row = {}
    for name in instruments:
        if name not in cache:  # setdefault would decode the split again for every candidate
            cache[name] = oracle_clips(root, name)
        clips = cache[name]
        probs = [clf.probabilities(clip, SAMPLE_RATE) for clip in clips]
        row[name] = {k: float(np.mean([p[k] for p in probs])) for k in instruments}
    return row


def main() -> None:
    from audiostyle.platform.evaluation.judge import CLASSIFIER_SECONDS, TRUST

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/judge_candidates"),
                        help="a demo root with piano, violin and the candidates, held-out sets rendered")
    parser.add_argument("--instruments", default="flute,clarinet,trumpet,oboe,alto_sax",
                        help="comma-separated candidates (each needs a folder under --data)")
    parser.add_argument("--seconds", type=float, default=CLASSIFIER_SECONDS,
                        help="judge training audio per (instrument, sound set), as evaluate uses")
    args = parser.parse_args()
    cache: dict[str, list[np.ndarray]] = {}
    print("| candidate X | P(X): X's oracle | P(X): piano / violin | X's oracle taken for | baseline: P(piano) / "
          f"P(violin) of their oracles | oracle >= {TRUST['oracle_min']}, input <= {TRUST['identity_max']} |")
    print("|---|---|---|---|---|---|")
    for x in [s.strip() for s in args.instruments.split(",") if s.strip()]:
        row = judge_row(args.data, x, args.seconds, cache)
        taken = ", ".join(f"{k} {v:.2f}" for k, v in row[x].items())
        trusted = row[x][x] >= TRUST["oracle_min"] and max(row["piano"][x], row["violin"][x]) <= TRUST["identity_max"]
        print(f"| {x} | {row[x][x]:.2f} | {row['piano'][x]:.2f} / {row['violin'][x]:.2f} | {taken} | "
              f"{row['piano']['piano']:.2f} / {row['violin']['violin']:.2f} | {'yes' if trusted else 'no'} |",
              flush=True)


if __name__ == "__main__":
    main()
