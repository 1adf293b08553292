"""Run a region-side step so that no failure detail leaves the region."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from connectors.base import RegionStore
from fedcrm.errors import FedcrmError
from fedcrm.protocol import RegionReply

__all__ = ["ERROR_LOG", "RegionReply", "in_region", "unwrap"]

T = TypeVar("T")
ERROR_LOG = "logs/errors.log"


def in_region(region: str, store: RegionStore, step: str, run: Callable[[], T]) -> RegionReply[T]:
    try:
        return RegionReply(region=region, ok=True, value=run())
    except FedcrmError as exc:  # our messages carry no row-level value by construction
        exc.region = None
        return RegionReply(region=region, ok=False, reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - anything else may quote data: keep it in the region
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            store.append_text(ERROR_LOG, f"--- {stamp} {step}\n{traceback.format_exc()}\n")
            where = f"see {ERROR_LOG} in the region's store"
        except FedcrmError:
            where = "the region's store could not record the details either"
        return RegionReply(
            region=region,
            ok=False,
            reason=f"{step} failed unexpectedly ({type(exc).__name__}); {where}",
        )


def unwrap(replies: dict[str, RegionReply[Any]]) -> dict[str, Any]:
    return {r: reply.value for r, reply in replies.items() if reply.ok}
