"""`audiostyle checkpoints`: list, rank and export checkpoints across runs and sweeps."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoints", help="list, rank and export checkpoints across runs and sweeps", description="List, rank and export checkpoints across runs and sweeps.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle checkpoints` is not built yet: it arrives with issue #7.")
    return 1
