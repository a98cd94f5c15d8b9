"""`audiostyle sweep`: Ray Tune + Optuna sweep over an experiment's sweep."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune + Optuna sweep over an experiment's sweep", description="Ray Tune + Optuna sweep over an experiment's sweep.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle sweep` is not built yet: it arrives with issue # block:6.")
    return 1
