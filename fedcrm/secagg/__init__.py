"""Secure aggregation (SecAgg, Bonawitz et al. 2017; SecAgg+, Bell et al. 2020).

The coordinator learns only the sum of the regions' contributions. Threat model and
guarantees: ``docs/security.md``.
"""

import importlib
from typing import Any

_EXPORTS = {
    "MaskingContributor": "adapters", "SecureAggregator": "adapters", "SecAggClient": "client",
    "FixedPointCodec": "codec", "Envelope": "envelope", "Inbox": "envelope", "GraphParams": "graph",
    "MaskingGraph": "graph", "COORDINATOR": "identity", "Identity": "identity", "Keyring": "identity",
    "SecAggServer": "server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import on first use (PEP 562): ``fedcrm.config`` needs only ``graph``, and the CLI's start-up
    should not pay for the cryptography and pandas that the other modules pull in."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
