"""`audiostyle evaluate`: evaluate a bundle on the paired test split."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a bundle on the paired test split", description="Evaluate a bundle on the paired test split.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle evaluate` is not built yet: it arrives with issue #7.")
    return 1
