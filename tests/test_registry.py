"""The component registry: registration, duplicates, unknown names, validation without building,
injected arguments, and third-party components from an installed plugin distribution."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from audiostyle.platform.core import registry as reg
from audiostyle.platform.core.errors import ConfigError


@pytest.fixture
def scratch(monkeypatch):
    """A fresh encoder registry, so test components never leak into the real one."""
    fresh = reg.Registry("encoder", reg.INJECTED["encoder"])
    monkeypatch.setitem(reg.REGISTRIES, "encoder", fresh)
    return fresh


def test_register_build_and_injected_arguments(scratch):
    @reg.register("encoder", "tiny")
    class Tiny:
        def __init__(self, in_bins: int, num_classes: int, dim: int = 8):
            self.in_bins, self.num_classes, self.dim = in_bins, num_classes, dim

    built = reg.build("encoder", {"component": "tiny", "dim": 4}, in_bins=10, num_classes=3, unused=1)
    assert (built.in_bins, built.num_classes, built.dim) == (10, 3, 4)
    assert scratch.names() == ["tiny"]


def test_duplicate_name_raises(scratch):
    @reg.register("encoder", "dup")
    def first(dim: int = 1):
        return dim

    with pytest.raises(ValueError, match="already registered"):
        @reg.register("encoder", "dup")
        def second(dim: int = 2):
            return dim


def test_unknown_name_lists_close_matches_and_known(scratch):
    reg.register("encoder", "style_conv")(lambda dim=1: dim)
    reg.register("encoder", "content_conv")(lambda dim=1: dim)
    with pytest.raises(ConfigError) as info:
        reg.validate_spec("encoder", {"component": "style_cnv"}, path="model.style_encoder")
    text = str(info.value)
    assert "Did you mean 'style_conv'" in text and "content_conv, style_conv" in text
    assert info.value.field_path == "model.style_encoder.component"


def test_validate_checks_arguments_without_building(scratch):
    built = []

    @reg.register("encoder", "counted")
    class Counted:
        def __init__(self, in_bins: int, width: int, depth: int = 2):
            built.append(1)

    reg.validate_spec("encoder", {"component": "counted", "width": 3}, path="m")
    with pytest.raises(ConfigError, match="requires argument 'width'"):
        reg.validate_spec("encoder", {"component": "counted"}, path="m")
    with pytest.raises(ConfigError, match="expected an integer"):
        reg.validate_spec("encoder", {"component": "counted", "width": 3, "depth": "two"}, path="m")
    with pytest.raises(ConfigError, match="must not be written here"):
        reg.validate_spec("encoder", {"component": "counted", "width": 3, "in_bins": 5}, path="m")
    with pytest.raises(ConfigError, match="missing 'component'"):
        reg.validate_spec("encoder", {"width": 3}, path="m")
    assert built == []  # validation never constructs


def test_every_builtin_component_has_complete_defaults():
    """The YAML picks and parametrizes; a component must be buildable from its name alone."""
    for kind, r in reg.REGISTRIES.items():
        for name in r.names():
            reg.validate_spec(kind, {"component": name}, path=f"{kind}.{name}")


def test_every_kind_has_builtin_components():
    for kind, r in reg.REGISTRIES.items():
        assert r.names(), f"no built-in {kind}"


PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"
[project]
name = "audiostyle-plugin-example"
version = "0.1"
[project.entry-points."audiostyle.components"]
example = "audiostyle_plugin_example"
[tool.setuptools]
py-modules = ["audiostyle_plugin_example"]
"""

PLUGIN_MODULE = '''
"""A third-party discriminator registered through the audiostyle.components entry point."""
from audiostyle.platform.core.registry import register

@register("discriminator", "plugin_linear")
class PluginLinear:
    """One linear layer: the simplest possible instrument classifier."""
    def __init__(self, in_dim: int, num_classes: int, bias: bool = True):
        self.shape = (in_dim, num_classes)
'''


def test_plugin_distribution_loads_through_entry_point(tmp_path):
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (src / "audiostyle_plugin_example.py").write_text(PLUGIN_MODULE)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "audiostyle.platform", "components", "discriminator"],
                            env=env, capture_output=True, text=True, check=True).stdout
    assert "plugin_linear" in listed and "bias = True" in listed

    exp = tmp_path / "exp.yaml"
    base = Path(__file__).resolve().parents[1] / "experiments" / "piano_violin.yaml"
    exp.write_text(f"defaults: [{base}]\nmodel:\n  discriminator: {{component: plugin_linear, bias: false}}\n")
    ok = subprocess.run([sys.executable, "-m", "audiostyle.platform", "validate", str(exp)],
                        env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Without the plugin on the path the same YAML is rejected, naming the field.
    bad = subprocess.run([sys.executable, "-m", "audiostyle.platform", "validate", str(exp)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "model.discriminator.component" in bad.stdout
