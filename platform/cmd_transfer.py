"""`audiostyle transfer`: transfer audio files to another instrument with an exported bundle."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="transfer audio files to another instrument with an exported bundle", description="Transfer audio files to another instrument with an exported bundle.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle transfer` is not built yet: it arrives with issue #7.")
    return 1
