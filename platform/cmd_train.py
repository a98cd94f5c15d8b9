"""`audiostyle train`: train an experiment YAML on Ray Train (local or cluster)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an experiment YAML on Ray Train (local or cluster)", description="Train an experiment YAML on Ray Train (local or cluster).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle train` is not built yet: it arrives with issue #5.")
    return 1
