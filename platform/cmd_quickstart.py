"""`audiostyle quickstart`: render demo data, train briefly, export the best checkpoint and transfer a clip."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="render demo data, train briefly, export the best checkpoint and transfer a clip", description="Render demo data, train briefly, export the best checkpoint and transfer a clip.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("`audiostyle quickstart` is not built yet: it arrives with issue #7.")
    return 1
