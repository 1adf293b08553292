"""The wheel carries what fedcrm needs outside the checkout: contracts, suites and the bundled data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fedcrm.config import PROJECT_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out, source = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source") / "fedcrm"
    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    shutil.copytree(PROJECT_ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".fedcrm", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
        "mlruns", "mlflow.db"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, cwd=out)
    return next(out.glob("fedcrm-*.whl"))


def test_the_wheel_ships_the_bundled_contracts_suites_and_data(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for use_case in ("lead-scoring", "churn"):
        assert f"fedcrm/bundled/contracts/{use_case}.yaml" in names
        assert f"fedcrm/bundled/expectations/{use_case}.json" in names
    assert {"fedcrm/bundled/data/bank_marketing.csv.gz", "fedcrm/bundled/data/telco_customer_churn.csv.gz",
            "fedcrm/bundled/data/ATTRIBUTION.md", "fedcrm/templates/compliance.html.j2"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)


def test_an_installed_wheel_finds_its_resources_outside_the_checkout(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import json, fedcrm, connectors.bundled as b\n"
        "from fedcrm.config import load_config\n"
        "from fedcrm.validation import load_suite_dict\n"
        "cfg = load_config(use_case='churn')\n"
        "frame = b.load_bundled('churn')\n"
        "suite = load_suite_dict(cfg.load_contract(), cfg.expectations_dir)\n"
        "print(json.dumps({'package': fedcrm.__file__, 'contract': str(cfg.contract_path), "
        "'data': str(b.DATA_DIR), 'rows': len(frame), 'suite': bool(suite)}))\n"
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("package", "contract", "data"):
        assert found[key].startswith(str(site)), (key, found[key])
    assert found["rows"] == 7043 and found["suite"]


def _imported_top_level_names() -> set[str]:
    import ast

    names: set[str] = set()
    for layer in ("fedcrm", "cli", "flows", "tasks", "connectors"):
        for path in (PROJECT_ROOT / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"fedcrm", "cli", "flows", "tasks", "connectors"}


def test_every_imported_third_party_package_is_a_declared_dependency():
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    declared = {re.split(r"[\[<>=!~ ]", spec, maxsplit=1)[0].lower().replace("_", "-")
                for spec in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    providers = packages_distributions()
    undeclared = {name: providers.get(name) for name in _imported_top_level_names()
                  if not {d.lower().replace("_", "-") for d in providers.get(name, [])} & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
