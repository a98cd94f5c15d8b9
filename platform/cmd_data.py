"""`audiostyle data`: add instrument datasets, render demo instruments, compute statistics."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="add instrument datasets, render demo instruments, compute statistics", description="Add instrument datasets, render demo instruments, compute statistics.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle data` is not built yet: it arrives with issue #3.")
    return 1
