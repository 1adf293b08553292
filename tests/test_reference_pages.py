"""The reference pages in docs/reference/ are what the code generates (`make docs`), so they cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.reference import cli_reference
from fedcrm.config import PROJECT_ROOT, FedcrmConfig
from fedcrm.reference import configuration_reference, summary_reference

REFERENCE = PROJECT_ROOT / "docs" / "reference"


@pytest.mark.parametrize(("page", "generate"), [("configuration.md", configuration_reference), ("cli.md", cli_reference),
                                                ("summary.md", summary_reference)])
def test_checked_in_reference_page_is_what_the_code_generates(page: str, generate) -> None:
    checked_in = (REFERENCE / page).read_text(encoding="utf-8")
    assert checked_in == generate(), f"docs/reference/{page} is out of date: run `make docs` and commit it"


def _keys(model: type, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            keys.extend(_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_configuration_key_is_documented_with_what_it_does() -> None:
    page = configuration_reference()
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[4].strip() for line in page.splitlines()
            if line.startswith("| `")}
    keys = _keys(FedcrmConfig)
    assert len(keys) > 60  # the walk reached the nested sections
    assert [k for k in keys if k not in rows] == []
    assert [k for k in keys if not rows[k]] == [], "give these fields a description in fedcrm/config.py"
    assert "federation.regions.<region>.source.bucket" in rows  # variants of a union are documented too


def test_the_configuration_page_names_no_path_of_this_machine() -> None:
    assert str(Path.cwd()) not in configuration_reference() and str(PROJECT_ROOT) not in configuration_reference()
