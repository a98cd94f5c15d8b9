"""The dependency rule, read from the source with `ast` (every import, function-local ones included).

    platform/core, platform/config/schema   the foundation: components/, datasets/ and stats/ may import
                                            these and nothing else of platform/
    components/   the models: no datasets/, stats/ or orchestration
    datasets/     ingest and streaming: no stats/ or components/
    stats/        normalization statistics: may read datasets/ and use components/' front ends
    ray           only platform/training/ and platform/sweeps/ import it

A violation fails with the file, the line and the import. `test_cli_help_imports_nothing_heavy` checks
the other half of the CLI's promise: `audiostyle --help` builds every parser without torch, numpy,
yaml or Ray.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"platform": "audiostyle.platform", "components": "audiostyle.components",
          "datasets": "audiostyle.datasets", "stats": "audiostyle.stats"}
FOUNDATION = ("audiostyle.platform.core", "audiostyle.platform.config.schema")
RAY_ALLOWED = ("audiostyle.platform.training", "audiostyle.platform.sweeps")


def module_name(path: Path) -> str:
    """`platform/training/worker.py` -> `audiostyle.platform.training.worker`."""
    rel = path.relative_to(ROOT)
    parts = [MAPPED[rel.parts[0]], *rel.parts[1:-1]]
    return ".".join(parts if rel.stem == "__init__" else [*parts, rel.stem])


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, absolute names."""
    package = module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from pkg import module` imports pkg.module
                yield node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rule_violations(module: str, imported: str) -> list[str]:
    """Why `module` may not import `imported` (empty when it may)."""
    why = []
    if within(imported, "ray") and not any(within(module, p) for p in RAY_ALLOWED):
        why.append("only platform/training/ and platform/sweeps/ import ray")
    if any(within(module, MAPPED[f]) for f in ("components", "datasets", "stats")):
        if within(imported, "audiostyle.platform") and not any(within(imported, p) for p in FOUNDATION):
            why.append("components/, datasets/ and stats/ import only platform/core and platform/config/schema")
    if within(module, "audiostyle.components"):
        for other in ("audiostyle.datasets", "audiostyle.stats"):
            if within(imported, other):
                why.append("components/ does not import datasets/ or stats/: callers pass what it needs")
    if within(module, "audiostyle.datasets"):
        for other in ("audiostyle.stats", "audiostyle.components"):
            if within(imported, other):
                why.append("datasets/ does not import stats/ or components/: platform runs them in order")
    return why


def source_files() -> list[Path]:
    return sorted(p for folder in MAPPED for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_dependency_rule():
    problems = []
    for path in source_files():
        module = module_name(path)
        for line, imported in imports(path):
            for why in rule_violations(module, imported):
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {imported}: {why}")
    assert not problems, "dependency rule broken:\n" + "\n".join(problems)


def test_rule_catches_each_kind_of_violation():
    """The rule itself, on made-up pairs (so a rule that allows everything cannot pass the test above)."""
    assert rule_violations("audiostyle.components.frontend", "audiostyle.stats.normalization_stats")
    assert rule_violations("audiostyle.components.frontend", "audiostyle.platform.training.driver")
    assert rule_violations("audiostyle.datasets.ingest", "audiostyle.stats.normalization_stats")
    assert rule_violations("audiostyle.datasets.ingest", "audiostyle.components.frontend")
    assert rule_violations("audiostyle.stats.normalization_stats", "audiostyle.platform.config.loader")
    assert rule_violations("audiostyle.platform.cli.train", "ray.train")
    assert rule_violations("audiostyle.platform.bundles.export", "ray")
    assert not rule_violations("audiostyle.platform.training.worker", "ray.train.torch")
    assert not rule_violations("audiostyle.datasets.streaming", "audiostyle.platform.config.schema")
    assert not rule_violations("audiostyle.components.frontend", "audiostyle.platform.core.registry")
    assert not rule_violations("audiostyle.stats.normalization_stats", "audiostyle.datasets.manifest")


def test_cli_help_imports_nothing_heavy():
    code = ("import sys; from audiostyle.platform.cli.main import build_parser; build_parser();"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'yaml', 'ray', 'optuna'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"building the CLI parsers imported {out.strip()}"
