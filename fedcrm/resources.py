"""What fedcrm ships inside its package: the bundled contracts, GX suites and public data sets.

Found through `importlib.resources`, so an installed wheel finds them outside the checkout. In the
checkout, `fedcrm/bundled/{contracts,expectations,data}` link to the top-level folders, which stay
where the project's layout puts them; the wheel carries copies (`[tool.setuptools.package-data]`).
fedcrm is installed as files (never zipped), so each resource is a real folder on disk.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def bundled(*parts: str) -> Path:
    """The path of a bundled resource, e.g. ``bundled("contracts", "churn.yaml")``."""
    resource = files("fedcrm").joinpath("bundled", *parts)
    return Path(str(resource))


BUNDLED_CONTRACTS = bundled("contracts")
BUNDLED_EXPECTATIONS = bundled("expectations")
BUNDLED_DATA = bundled("data")
