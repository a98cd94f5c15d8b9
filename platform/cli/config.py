"""`audiostyle validate`, `audiostyle config show` and `audiostyle components`: config tools.

None of these reads data or starts Ray: validation checks every field against the schema, names and
arguments against the component signatures, builds the model on PyTorch's meta device (no memory for
weights) to catch arguments that do not fit together, and checks the `sweep:` block against the experiment.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check experiment YAMLs without building anything",
                       description="Check every field, component name and argument of each experiment YAML "
                                   "against the typed config and the component signatures, build the model on "
                                   "PyTorch's meta device (no memory, no data) and check the sweep block. Reads "
                                   "no data and starts no Ray. Exit code 2 if any file is invalid.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or folders (searched recursively)")
    p.add_argument("--override", "-o", action="append", default=[], metavar="a.b=c",
                   help="apply an override to every file before validating (repeatable)")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("config", help="show the resolved config of an experiment",
                       description="Compose `defaults:`, apply overrides and resolve ${...} references.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = csub.add_parser("show", help="print the resolved config as YAML")
    show.add_argument("path", help="experiment YAML")
    show.add_argument("overrides", nargs="*", metavar="a.b=c", help="overrides (prefix + to add a new key)")
    show.set_defaults(func=run_show)

    p = sub.add_parser("components", help="list registered components and their arguments",
                       description="List every registered component by kind, with its arguments and defaults.")
    p.add_argument("kind", nargs="?", help="only this kind (frontend, encoder, decoder, discriminator, loss)")
    p.set_defaults(func=run_components)


def _experiment_files(paths: list[str]) -> list[str]:
    from pathlib import Path

    from audiostyle.platform.core.errors import ConfigError

    files: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            # base/ files are fragments composed by `defaults:`, not experiments of their own
            files += sorted(str(f) for f in p.rglob("*.yaml") if "base" not in f.relative_to(p).parts[:-1])
        elif p.is_file():
            files.append(str(p))
        else:
            raise ConfigError(f"file not found: {p}")
    return files


def run_validate(args: argparse.Namespace) -> int:
    from audiostyle.platform.checking.checked_load import load_checked_experiment
    from audiostyle.platform.core.errors import ConfigError

    bad = 0
    for f in _experiment_files(args.paths):
        try:
            cfg = load_checked_experiment(f, args.override)
        except ConfigError as exc:
            bad += 1
            print(f"INVALID {exc}")
            continue
        print(f"ok      {f}  ({cfg.name}: {', '.join(cfg.instrument_names)}; "
              f"{len(cfg.curriculum.phases)} phases{'; sweep' if cfg.sweep else ''})")
    return 2 if bad else 0


def run_show(args: argparse.Namespace) -> int:
    import yaml

    from audiostyle.platform.checking.checked_load import load_checked_experiment
    from audiostyle.platform.config.typed_convert import to_dict

    cfg = load_checked_experiment(args.path, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False, width=110), end="")
    return 0


def run_components(args: argparse.Namespace) -> int:
    from audiostyle.platform.core.registry import REGISTRIES, describe

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        print(f"{kind}:")
        for name, doc, params in describe(kind):
            print(f"  {name}" + (f"  - {doc}" if doc else ""))
            for pname, default in params:
                print(f"      {pname} = {default}")
    return 0
