"""Thin Prefect tasks over the pure core (``fedcrm``) and the IO layer (``connectors``).

Regional tasks run inside a region: they read records through that region's connector, keep
every frame in the region's private store and return only releasable aggregates wrapped in a
``RegionReply``. They never raise: a failure becomes ``RegionReply(ok=False, reason=...)`` so
the coordinator can exclude the region with the reason shown, and an unexpected exception's
text (which may quote a data value) stays in the region's private log.

No task persists its result or is cached: results may be large and must not be written to
Prefect's result storage outside the region.
"""
