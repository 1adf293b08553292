"""Secure aggregation (SecAgg, Bonawitz et al. 2017; SecAgg+, Bell et al. 2020).

The coordinator learns only the sum of the regions' contributions. Threat model and
guarantees: ``docs/security.md``.
"""

from fedcrm.secagg.adapters import MaskingContributor, SecureAggregator
from fedcrm.secagg.client import SecAggClient
from fedcrm.secagg.codec import FixedPointCodec
from fedcrm.secagg.envelope import Envelope, Inbox
from fedcrm.secagg.graph import GraphParams, MaskingGraph
from fedcrm.secagg.identity import COORDINATOR, Identity, Keyring
from fedcrm.secagg.server import SecAggServer

__all__ = [
    "COORDINATOR", "Envelope", "FixedPointCodec", "GraphParams", "Identity", "Inbox", "Keyring", "MaskingContributor",
    "MaskingGraph", "SecAggClient", "SecAggServer", "SecureAggregator",
]
