"""Every use of a third-party library's private API lives in one file, platform/training/private_apis.py.

Private names change without notice; kept in one inventory, each beside the upstream issue it works
around, an upgrade that breaks one breaks there, and a workaround whose upstream fix landed is deleted
in one place. The checker reads the source with `ast` and finds, outside the inventory:
- imports of a private module of another distribution (`import ray._private.services`,
  `from ray.train.v2._internal... import x`);
- private attributes (`_name`, not dunders) of a name bound by importing another distribution
  (`librosa.filters._relative_bandwidth`, `services._x`), however deep the attribute chain;
- strings naming a private module of a third-party package (a logger name such as "ray._private.worker").
The tests plant each kind into an in-memory file and assert the checker names it.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("platform", "components", "datasets", "stats")
INVENTORY = "platform/training/private_apis.py"
PRIVATE_MODULE_STRING = re.compile(r"\b[a-z]\w*(?:\.\w+)*\._[a-z]\w*(?:\.\w+)*")


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _third_party(module: str) -> bool:
    """Another distribution's module (the standard library's underscored names, os._exit or argparse's
    action classes, are documented and stable)."""
    top = module.split(".")[0]
    return bool(top) and top != "audiostyle" and top not in sys.stdlib_module_names


def _installed_third_party(top: str) -> bool:
    """An importable top-level module that is neither ours nor the standard library's."""
    return (top != "audiostyle" and top not in sys.stdlib_module_names
            and importlib.util.find_spec(top) is not None)


def private_uses(rel: str, source: str) -> list[str]:
    """'file:line what' for each private third-party use in `source`."""
    tree = ast.parse(source, rel)
    bound: set[str] = set()  # local names that stand for a third-party module or object
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _third_party(alias.name):
                    bound.add(alias.asname or alias.name.split(".")[0])
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append(f"{rel}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and not node.level and _third_party(node.module or ""):
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if any(_private(p) for p in [*(node.module or "").split("."), alias.name]):
                    found.append(f"{rel}:{node.lineno} from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for match in PRIVATE_MODULE_STRING.finditer(node.value):
                top = match.group(0).split(".")[0]
                if top in bound or _installed_third_party(top):
                    found.append(f"{rel}:{node.lineno} {match.group(0)!r}")
    return found


def tree_sources() -> dict[str, str]:
    return {p.relative_to(ROOT).as_posix(): p.read_text()
            for folder in CODE_FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}


def test_private_third_party_apis_are_used_in_the_inventory_only():
    sources = tree_sources()
    assert INVENTORY in sources
    outside = [use for rel, src in sources.items() if rel != INVENTORY for use in private_uses(rel, src)]
    assert not outside, ("private APIs of other libraries outside " + INVENTORY + " (move them there, beside the "
                         "upstream issue they work around):\n" + "\n".join(outside))
    assert private_uses(INVENTORY, sources[INVENTORY]), "the inventory holds nothing: is the checker still reading it?"


def test_checker_finds_each_kind_of_private_use():
    planted = {
        "import ray._private.services as services\n": "import ray._private.services",
        "from ray.train.v2._internal.util import time_monotonic\n": "from ray.train.v2._internal.util",
        "import librosa\nalpha = librosa.filters._relative_bandwidth(freqs=f)\n": "librosa.filters._relative_bandwidth",
        "from ray.train import v2\nv2.x._hidden = 1\n": "v2.x._hidden",
        "import logging\nlogging.getLogger('ray._private.worker')\n": "'ray._private.worker'",
    }
    for source, what in planted.items():
        uses = private_uses("planted.py", source)
        assert any(what in use for use in uses), (source, uses)
    # our own private names, dunders and private attributes of our own objects are not third-party uses
    clean = ("import os, torch\nfrom audiostyle.platform.core import errors\nx = errors._private_helper\n"
             "torch.nn.Module.__init__\nself._cache = {}\nname = 'audiostyle._internal'\nos._exit(0)\n")
    assert private_uses("clean.py", clean) == []
