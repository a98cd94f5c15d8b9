"""The package layout guard: mapped folders have no __init__.py, every subpackage is listed, and the
repo root never shadows the standard library's `platform` (see design.md, packaging section)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_cfg() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_mapped_folders_have_no_init_and_every_subpackage_is_listed():
    cfg, found = _setuptools_cfg(), set()
    for pkg, rel in cfg["package-dir"].items():
        assert not (ROOT / rel / "__init__.py").exists(), f"{rel}/__init__.py would shadow the standard library"
        for d in [ROOT / rel, *(p for p in (ROOT / rel).rglob("*") if p.is_dir())]:
            if "__pycache__" not in d.parts and any(d.glob("*.py")):
                found.add(".".join([pkg, *d.relative_to(ROOT / rel).parts]))
    listed = set(cfg["packages"])
    assert found <= listed, f"unlisted: {found - listed}"
    for extra in listed - found:  # data-only packages (the committed statistics) must exist and hold files
        parent = max((p for p in cfg["package-dir"] if extra.startswith(p + ".")), key=len)
        folder = ROOT / cfg["package-dir"][parent] / Path(*extra[len(parent) + 1:].split("."))
        assert folder.is_dir() and any(folder.iterdir()), extra


def test_every_platform_subpackage_is_a_listed_regular_package():
    """Each folder under platform/ holding modules has its own __init__.py and is listed in pyproject
    (an unlisted one imports in an editable install and is missing from a real one)."""
    listed = set(_setuptools_cfg()["packages"])
    folders = sorted(d for d in (ROOT / "platform").rglob("*")
                     if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py")))
    assert folders, "platform/ has no subpackages"
    for d in folders:
        name = ".".join(["audiostyle.platform", *d.relative_to(ROOT / "platform").parts])
        assert (d / "__init__.py").is_file(), f"{d.relative_to(ROOT)} has no __init__.py"
        assert name in listed, f"{name} is not listed in pyproject [tool.setuptools] packages"


def test_every_platform_subpackage_is_on_the_readme_layout_map():
    """The README's Layout block names each folder under platform/ (the map a newcomer reads first)."""
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## Architecture")]
    folders = sorted(d.name for d in (ROOT / "platform").iterdir() if (d / "__init__.py").is_file())
    assert "checking" in folders and "preflight.py" not in {p.name for p in (ROOT / "platform" / "config").iterdir()}
    missing = [name for name in folders if f"\n  {name}/" not in layout]
    assert not missing, f"platform/ folders missing from the README's Layout: {missing}"


def test_wheel_holds_every_module_of_the_tree_and_nothing_else(tmp_path):
    """The wheel shipped to clusters: every source module, every listed package, no stale module from
    an earlier layout (an in-tree build/lib keeps those) and no top-level `platform`."""
    import zipfile

    from audiostyle.platform.training.ray_runtime import build_wheel

    cfg = _setuptools_cfg()
    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    expected = set()
    for pkg, rel in cfg["package-dir"].items():
        for f in (ROOT / rel).rglob("*.py"):
            if "__pycache__" not in f.parts:
                expected.add("/".join([*pkg.split("."), *f.relative_to(ROOT / rel).parts]))
    shipped = {n for n in names if n.endswith(".py")}
    assert expected <= shipped, f"missing from the wheel: {sorted(expected - shipped)}"
    assert shipped <= expected, f"in the wheel but not in the source tree: {sorted(shipped - expected)}"
    for pkg in cfg["packages"]:
        assert any(n.startswith(pkg.replace(".", "/") + "/") for n in names), f"{pkg} is not in the wheel"
    assert not [n for n in names if n.startswith("platform/")]


def test_design_card_top_level_layout_exists():
    for name in ["README.md", "pyproject.toml", "platform", "components", "datasets", "experiments", "stats", "tests"]:
        assert (ROOT / name).exists(), name
    assert not (ROOT / "audiostyle").exists(), "audiostyle is an implicit namespace with no folder of its own"


def test_stdlib_platform_still_works_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-c", "import platform, numpy; print(platform.system(), platform.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    system, path = out.split()
    assert system and str(ROOT) not in path


def test_audiostyle_imports_from_another_directory(tmp_path):
    code = ("import audiostyle.platform.core.registry, audiostyle.platform.cli.main, importlib.metadata as m;"
            "print(m.version('audiostyle'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip()


def test_console_script_and_module_entry_agree():
    via_module = subprocess.run([sys.executable, "-m", "audiostyle.platform", "--help"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    assert "validate" in via_module and "train" in via_module and "transfer" in via_module
