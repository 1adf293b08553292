"""Which regions take part in a job, and why any were excluded."""

from __future__ import annotations

from fedcrm.errors import InsufficientRegionsError
from fedcrm.summary import RegionSummary


class Roster:
    """The participating regions of one job; exclusions are final and carry their reason."""

    def __init__(self, regions: list[str]):
        self.regions: dict[str, RegionSummary] = {r: RegionSummary(status="included") for r in regions}

    @property
    def active(self) -> list[str]:
        return [r for r, s in self.regions.items() if s.status == "included"]

    def exclude(self, region: str, step: str, reason: str) -> None:
        summary = self.regions[region]
        if summary.status == "included":
            summary.status, summary.excluded_at, summary.reason = "excluded", step, reason

    def require_quorum(self, min_regions: int, step: str) -> None:
        if len(self.active) < min_regions:
            excluded = "; ".join(f"{r}: {s.reason}" for r, s in self.regions.items() if s.status == "excluded")
            raise InsufficientRegionsError(
                f"after {step}, {len(self.active)} region(s) remain {self.active} but federation.min_regions is "
                f"{min_regions}. Excluded: {excluded or 'none'}",
                hint="fix the excluded regions' data (see their reasons), or lower federation.min_regions",
            )
