"""Embedded launcher: run a flow in this process on Prefect's ephemeral server.

Prefect records task runs from events that its server consumes asynchronously. The ephemeral
server stops when this process exits, so without a wait the last events can be dropped (and
Prefect prints a traceback while shutting down). ``wait_until_recorded`` polls the API, with a
bound, until every task run of the flow run is recorded in a final state.

Under load the server itself can fail to start in time; Prefect then raises a bare RuntimeError
(a traceback at the CLI). ``run_embedded`` turns it into an ``OrchestrationError`` that says which
setting to raise.
"""

from __future__ import annotations

import os
import time
from typing import Any
from uuid import UUID

from cli.environment import STARTUP_TIMEOUT_SETTING
from fedcrm.errors import OrchestrationError

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def wait_until_recorded(flow_run_id: UUID, *, timeout_s: float = 20.0, poll_s: float = 0.5) -> bool:
    """True once the flow run's task runs are all final and their count is stable for two polls."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    previous = -1
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            settled = all(r.state is not None and r.state.type.value in FINAL for r in runs)
            if settled and len(runs) == previous:
                return True
            previous = len(runs) if settled else -1
            time.sleep(poll_s)
    return False


EPHEMERAL_START_FAILED = "attempting to connect to ephemeral Prefect API server"
"""What Prefect's RuntimeError says when its embedded server did not answer in time (prefect.server.api.server)."""


def server_start_failure(exc: BaseException) -> OrchestrationError | None:
    """The clear error for Prefect's embedded server not starting, or None if ``exc`` is something else."""
    if not (isinstance(exc, RuntimeError) and EPHEMERAL_START_FAILED in str(exc)):
        return None
    waited = os.environ.get(STARTUP_TIMEOUT_SETTING, "20")
    return OrchestrationError(
        f"Prefect's embedded API server did not start within {waited} s ({STARTUP_TIMEOUT_SETTING}); "
        "the machine is probably busy",
        hint=f"retry with a longer start-up timeout, e.g. {STARTUP_TIMEOUT_SETTING}=600 fedcrm …, or run "
             "`prefect server start` elsewhere and point PREFECT_API_URL at it",
    )


def run_embedded(flow: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``flow`` and return its final State once Prefect has recorded all of it."""
    try:
        state = flow(*args, return_state=True, **kwargs)
    except RuntimeError as exc:
        if (clear := server_start_failure(exc)) is not None:
            raise clear from None
        raise
    flow_run_id = state.state_details.flow_run_id
    if flow_run_id is not None:
        wait_until_recorded(flow_run_id)
    return state
