"""argparse value types for numeric options, with their domains, so `--chunk-seconds 0` or
`--overlap-seconds -1` (or `--workers 2-x`) stops at parse time with a one-line message instead of being ignored or
failing later with a traceback.

Only argparse is imported here (the CLI's help must stay instant; tests/test_layout.py checks it).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(kind: type, low: float, low_open: bool, unit: str) -> Callable[[str], float]:
    bound = f"{'>' if low_open else '>='} {low:g}"
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}{unit}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {bound}{unit}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"  # what argparse names in its own messages
    return parse


positive_seconds = _number(float, 0, True, " seconds")
non_negative_seconds = _number(float, 0, False, " seconds")
positive_minutes = _number(float, 0, True, " minutes")
positive_number = _number(float, 0, True, "")
positive_int = _number(int, 1, False, "")
non_negative_int = _number(int, 0, False, "")


def unit_fraction(text: str) -> float:
    """A fraction in [0, 1) (argparse type of `data demo --chords`)."""
    value = _number(float, 0, False, "")(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1 (a fraction of each split), got {text}")
    return value


def probability(text: str) -> float:
    """A chance in [0, 1] (argparse type of `data demo --vibrato`)."""
    value = _number(float, 0, False, "")(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be at most 1 (a chance), got {text}")
    return value


def worker_count(text: str) -> int | tuple[int, int]:
    """`N` or `MIN-MAX` (argparse type of --workers, shared by `train` and `submit`)."""
    try:
        if "-" in text:
            low, high = (int(part) for part in text.split("-", 1))
            return (low, high) if low != high else low
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX (e.g. 4 or 2-4), got {text!r}") from None


def add_steady_pitch_option(p: argparse.ArgumentParser) -> None:
    """--steady-pitch / --no-steady-pitch, shared by `transfer` and `evaluate`."""
    p.add_argument("--steady-pitch", action=argparse.BooleanOptionalAction, default=None,
                   help="take the input's vibrato out before transferring it, so that an instrument without "
                        "vibrato (a piano) does not inherit it (default: as the bundle's model.steady_pitch)")
