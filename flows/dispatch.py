"""Run one regional task in every participating region.

Embedded mode submits the task to the local task runner for each region. Distributed mode
(issue 6) runs the region's deployment on the region's own work pool instead; callers see the
same ``{region: RegionReply}`` either way.
"""

from __future__ import annotations

from typing import Any

from tasks.guard import RegionReply


def in_each_region(regional_task: Any, regions: list[str], **arguments: Any) -> dict[str, RegionReply[Any]]:
    futures = {region: regional_task.submit(region=region, **arguments) for region in regions}
    return {region: future.result() for region, future in futures.items()}
