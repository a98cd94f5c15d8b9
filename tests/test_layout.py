"""The dependency rule, read from the source with `ast` (every import, function-local ones included).

    platform/core, platform/config  the foundation: components/, datasets/ and stats/ may import these
                                    and nothing else of platform/; they import nothing above them
                                    (core imports only core, config only core and config)
    components/   the models: no datasets/, stats/ or orchestration
    datasets/     ingest and streaming: no stats/ or components/
    stats/        normalization statistics: may read datasets/ and use components/' front ends
    platform/cli  the top: nothing else imports it (platform/__main__.py aside)
    ray           only platform/training/ and platform/sweeps/ import it
    no cycles     no module reaches itself through imports that run (those under `if TYPE_CHECKING:`
                  never run, so they may close a loop); ALLOWED_CYCLES would name one left on purpose

A violation fails with the file, the line and the import (a cycle with each import that closes it).
The checker reads a {path: source} mapping, so the tests below plant one violation of each clause into
an in-memory copy of the tree and assert its message. `test_cli_help_imports_nothing_heavy` checks the
other half of the CLI's promise: `audiostyle --help` builds every parser without torch, numpy, yaml or Ray.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"platform": "audiostyle.platform", "components": "audiostyle.components",
          "datasets": "audiostyle.datasets", "stats": "audiostyle.stats"}
CORE, CONFIG, CLI = "audiostyle.platform.core", "audiostyle.platform.config", "audiostyle.platform.cli"
FOUNDATION = (CORE, CONFIG)
RAY_ALLOWED = ("audiostyle.platform.training", "audiostyle.platform.sweeps")
CLI_ENTRY = "audiostyle.platform.__main__"  # `python -m audiostyle.platform` runs the CLI
# Loops left on purpose, each with why (none today: the last, test_hooks <-> worker, went when the probe
# took the worker module's file from the loop object it is handed instead of importing the module).
ALLOWED_CYCLES: set[frozenset[str]] = set()


def module_name(rel: str) -> str:
    """`platform/training/worker.py` -> `audiostyle.platform.training.worker`."""
    path = PurePosixPath(rel)
    parts = [MAPPED[path.parts[0]], *path.parts[1:-1]]
    return ".".join(parts if path.stem == "__init__" else [*parts, path.stem])


def _type_checking_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (getattr(node.test, "id", None) == "TYPE_CHECKING"
                                         or getattr(node.test, "attr", None) == "TYPE_CHECKING"):
            found |= {id(n) for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)}
    return found


def imports(rel: str, source: str) -> Iterator[tuple[int, str, bool]]:
    """(line, imported name, type-only) for every import statement in the file, absolute names."""
    module = module_name(rel)
    package = module if PurePosixPath(rel).stem == "__init__" else module.rpartition(".")[0]
    tree = ast.parse(source, rel)
    type_only = _type_checking_imports(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, id(node) in type_only
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import module` imports pkg.module
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base, id(node) in type_only


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_violations(module: str, imported: str) -> list[str]:
    """Why `module` may not import `imported` (empty when it may)."""
    why = []
    if within(imported, "ray") and not any(within(module, p) for p in RAY_ALLOWED):
        why.append("only platform/training/ and platform/sweeps/ import ray")
    ours = within(imported, "audiostyle")
    if within(module, CORE) and ours and not within(imported, CORE):
        why.append("platform/core is the bottom of the foundation: it imports nothing else of audiostyle")
    if within(module, CONFIG) and ours and not any(within(imported, p) for p in FOUNDATION):
        why.append("platform/config is foundation: it imports only platform/core and platform/config "
                   "(checks that build the model or read the sweep belong in platform/checking)")
    if any(within(module, MAPPED[f]) for f in ("components", "datasets", "stats")):
        if within(imported, "audiostyle.platform") and not any(within(imported, p) for p in FOUNDATION):
            why.append("components/, datasets/ and stats/ import only platform/core and platform/config")
    if within(imported, CLI) and not within(module, CLI) and module != CLI_ENTRY:
        why.append("platform/cli is the top layer: nothing below imports it (move what is shared below it)")
    if within(module, "audiostyle.components"):
        for other in ("audiostyle.datasets", "audiostyle.stats"):
            if within(imported, other):
                why.append("components/ does not import datasets/ or stats/: callers pass what it needs")
    if within(module, "audiostyle.datasets"):
        for other in ("audiostyle.stats", "audiostyle.components"):
            if within(imported, other):
                why.append("datasets/ does not import stats/ or components/: platform runs them in order")
    return why


def _short(module: str) -> str:
    return module.removeprefix("audiostyle.").removeprefix("platform.")


def cycle_problems(edges: dict[str, dict[str, str]]) -> list[str]:
    """One message per set of modules that reach each other (Tarjan's strongly connected components),
    naming a shortest loop through its first module and the file:line of each import on it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 and frozenset(group) not in ALLOWED_CYCLES:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    problems = []
    for group in sorted(groups):
        start, members = group[0], set(group)
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:  # breadth first, so the loop shown is a shortest one
            reached = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w in members and w not in came_from:
                        came_from[w] = v
                        reached.append(w)
            frontier = reached
        loop, node = [start], came_from[start]
        while node != start:
            loop.append(node)
            node = came_from[node]
        loop = [start, *reversed(loop[1:]), start]
        where = ", ".join(edges[a][b] for a, b in zip(loop, loop[1:]))
        problems.append(f"import cycle: {' -> '.join(map(_short, loop))} ({where}): move what both need below "
                        "them, or import one side for type hints only (`if TYPE_CHECKING:`)")
    return problems


def tree_problems(tree: dict[str, str]) -> list[str]:
    """Every broken clause of the rule in a {repo-relative path: source} mapping of the mapped folders."""
    modules = {module_name(rel) for rel in tree}
    problems: list[str] = []
    edges: dict[str, dict[str, str]] = {}  # module -> {module it imports at run time: "file:line"}
    for rel, source in sorted(tree.items()):
        module = module_name(rel)
        for line, imported, type_only in imports(rel, source):
            problems += [f"{rel}:{line}: imports {imported}: {why}" for why in rule_violations(module, imported)]
            target = max((m for m in modules if within(imported, m)), key=len, default=None)
            if target and target != module and not type_only:
                edges.setdefault(module, {}).setdefault(target, f"{rel}:{line}")
    return problems + cycle_problems(edges)


def source_tree() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text() for folder in MAPPED for p in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in p.parts}


def test_dependency_rule():
    problems = tree_problems(source_tree())
    assert not problems, "dependency rule broken:\n" + "\n".join(problems)


def test_rule_catches_each_kind_of_violation():
    """The rule itself, on made-up pairs (so a rule that allows everything cannot pass the test above)."""
    assert rule_violations("audiostyle.components.frontend", "audiostyle.stats.normalization_stats")
    assert rule_violations("audiostyle.components.frontend", "audiostyle.platform.training.driver")
    assert rule_violations("audiostyle.datasets.ingest", "audiostyle.stats.normalization_stats")
    assert rule_violations("audiostyle.datasets.ingest", "audiostyle.components.frontend")
    assert rule_violations("audiostyle.stats.normalization_stats", "audiostyle.platform.checking.checked_load")
    assert rule_violations("audiostyle.platform.config.loader", "audiostyle.platform.sweeps.space")
    assert rule_violations("audiostyle.platform.core.registry", "audiostyle.platform.config.schema")
    assert rule_violations("audiostyle.platform.sweeps.driver", "audiostyle.platform.cli.argtypes")
    assert rule_violations("audiostyle.platform.cli.train", "ray.train")
    assert rule_violations("audiostyle.platform.bundles.export", "ray")
    assert not rule_violations("audiostyle.platform.training.worker", "ray.train.torch")
    assert not rule_violations("audiostyle.datasets.streaming", "audiostyle.platform.config.schema")
    assert not rule_violations("audiostyle.stats.normalization_stats", "audiostyle.platform.config.loader")
    assert not rule_violations("audiostyle.components.frontend", "audiostyle.platform.core.registry")
    assert not rule_violations("audiostyle.stats.normalization_stats", "audiostyle.datasets.manifest")
    assert not rule_violations("audiostyle.platform.config.loader", "audiostyle.platform.core.errors")
    assert not rule_violations("audiostyle.platform.__main__", "audiostyle.platform.cli.main")


def planted(files: dict[str, str]) -> list[str]:
    """The problems of the real tree with `files` added or replaced (an in-memory copy: nothing is written)."""
    return tree_problems({**source_tree(), **files})


def test_planted_foundation_import_of_a_component_fails():
    problems = planted({"platform/config/planted.py": "from audiostyle.components.timbre_transfer import x\n"})
    assert problems == ["platform/config/planted.py:1: imports audiostyle.components.timbre_transfer.x: platform/config "
                        "is foundation: it imports only platform/core and platform/config (checks that build the "
                        "model or read the sweep belong in platform/checking)"]


def test_planted_core_import_of_config_fails():
    problems = planted({"platform/core/planted.py": "def f():\n    import audiostyle.platform.config.schema\n"})
    assert problems == ["platform/core/planted.py:2: imports audiostyle.platform.config.schema: platform/core is "
                        "the bottom of the foundation: it imports nothing else of audiostyle"]


def test_planted_import_of_the_cli_from_below_fails():
    problems = planted({"platform/training/planted.py": "from audiostyle.platform.cli.argtypes import worker_count\n"})
    assert problems == ["platform/training/planted.py:1: imports audiostyle.platform.cli.argtypes.worker_count: "
                        "platform/cli is the top layer: nothing below imports it (move what is shared below it)"]


def test_models_may_import_all_of_the_foundation_but_not_the_checked_load():
    assert planted({"components/planted.py": "from audiostyle.platform.config.loader import config_from_dict\n"}) == []
    problems = planted({"components/planted.py": "from audiostyle.platform.checking import checked_load\n"})
    assert problems == ["components/planted.py:1: imports audiostyle.platform.checking.checked_load: components/, "
                        "datasets/ and stats/ import only platform/core and platform/config"]


def test_planted_cycle_fails_naming_each_import_and_type_only_loops_pass():
    submit = source_tree()["platform/cli/submit.py"]  # train imports submit; a function-local import back
    problems = planted({"platform/cli/submit.py": submit + "\n\ndef _back():\n    from audiostyle.platform.cli import train\n"})
    line = len(submit.splitlines()) + 4
    assert len(problems) == 1 and problems[0].startswith(
        f"import cycle: cli.submit -> cli.train -> cli.submit (platform/cli/submit.py:{line}, platform/cli/train.py:")
    three = {"platform/sweeps/planted_a.py": "from audiostyle.platform.sweeps.planted_b import b\n",
             "platform/sweeps/planted_b.py": "from audiostyle.platform.sweeps import planted_c\n",
             "platform/sweeps/planted_c.py": "import audiostyle.platform.sweeps.planted_a\n"}
    assert planted(three) == ["import cycle: sweeps.planted_a -> sweeps.planted_b -> sweeps.planted_c -> "
                              "sweeps.planted_a (platform/sweeps/planted_a.py:1, platform/sweeps/planted_b.py:1, "
                              "platform/sweeps/planted_c.py:1): move what both need below them, or import one side "
                              "for type hints only (`if TYPE_CHECKING:`)"]
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import audiostyle.platform.sweeps.planted_a\n"
    assert planted({**three, "platform/sweeps/planted_c.py": type_only}) == []


def test_cli_help_imports_nothing_heavy():
    code = ("import sys; from audiostyle.platform.cli.main import build_parser; build_parser();"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'yaml', 'ray', 'optuna'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"building the CLI parsers imported {out.strip()}"
