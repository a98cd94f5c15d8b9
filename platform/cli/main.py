"""The `audiostyle` command: one subcommand per user job, each defined in its own module of cli/.

Command modules import only argparse (and the dependency-free platform/core) at module level; heavy
imports happen inside their run functions, so `audiostyle --help` answers instantly
(tests/test_layout.py checks that building every parser imports no torch, numpy, yaml or Ray). Errors about the user's input (AudiostyleError)
are printed as one clear message with exit code 2; anything else is a bug and keeps its traceback.
Mistakes in the command line itself (a missing argument, `--chunk-seconds 0`) get the same treatment:
one line naming the command and the argument, exit code 2 (OneLineParser).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from audiostyle.platform.core.errors import AudiostyleError

# Order is the order of `audiostyle --help`: the four user jobs first, then the config tools.
COMMAND_MODULES = (
    "quickstart",
    "data",
    "train",
    "submit",
    "jobs",
    "sweep",
    "checkpoints",
    "transfer",
    "evaluate",
    "config",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line `error: PROG: argument ...: what is wrong` (exit 2)
    instead of the usage block; every subcommand parser inherits it through add_subparsers."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="audiostyle",
        description="Neural timbre transfer between instruments: datasets, Ray training, sweeps, transfer.",
        epilog="Each command has its own --help. Start with `audiostyle quickstart`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"audiostyle.platform.cli.{name}").add_parser(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, except that `a.b=c` words after options join the command's overrides."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # argparse stops collecting positionals at the first option, so `train X.yaml --workers 2 a.b=c`
    # leaves `a.b=c` over; for commands that take overrides, such leftovers are overrides too.
    args = parse(parser, argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AudiostyleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
