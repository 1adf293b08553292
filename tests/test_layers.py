"""The layers of docs/architecture.md, checked: imports only run downwards, and the core holds no Prefect.

cli → flows → tasks → connectors → fedcrm (the pure core). Read from the source with ``ast``, so
an import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from fedcrm.config import PROJECT_ROOT

LAYERS = ["cli", "flows", "tasks", "connectors", "fedcrm"]
"""Highest first: a layer may import the ones after it, never the ones before."""


def _imported_packages(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_runs_upwards(layer: str) -> None:
    above = set(LAYERS[: LAYERS.index(layer)])
    files = sorted((PROJECT_ROOT / layer).rglob("*.py"))
    assert files
    upward = {str(p.relative_to(PROJECT_ROOT)): sorted(_imported_packages(p) & above) for p in files}
    assert {k: v for k, v in upward.items() if v} == {}


def test_the_core_imports_no_prefect() -> None:
    modules = sorted(
        ".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (PROJECT_ROOT / "fedcrm").rglob("*.py")
    )
    assert len(modules) > 40
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows', 'tasks', 'cli')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"


def test_every_module_of_every_layer_imports() -> None:
    """A name removed from one module and still imported by another fails here, not in the middle of a job."""
    modules = sorted(
        ".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for layer in LAYERS for p in (PROJECT_ROOT / layer).rglob("*.py")
    )
    code = "import importlib\nfor m in %r: importlib.import_module(m)\n" % (modules,)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
