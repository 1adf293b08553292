"""The fedcrm exception tree.

Every error says what went wrong *and what to do*. Errors carry context as attributes
(region, source, column, ...) but never a row-level value or a credential, so they are
safe to log and to send across regions.

    FedcrmError
    ├── ConfigError            invalid configuration (YAML file, CLI override)
    ├── ContractError          a data contract is invalid or does not fit the data
    ├── ConnectorError         reading/writing a region's store failed
    ├── DataValidationError    a region's data failed a critical expectation
    ├── FeatureError           features could not be fitted or applied
    ├── TrainingError          local training failed (e.g. non-finite loss)
    ├── PrivacyError           a privacy requirement cannot be met (δ ≥ 1/n, unreachable ε)
    ├── FederationError        the federation cannot proceed
    │   ├── InsufficientRegionsError   too few regions remain after exclusions
    │   └── SecureAggregationError     secure aggregation could not complete a step
    │       ├── MessageRejectedError       a protocol message failed authentication/binding
    │       └── AggregationAbortedError    below the threshold t: nothing was unmasked
    ├── IdentityError          a party's identity key is missing or not in the keyring
    ├── OrchestrationError     Prefect's embedded API server did not start
    └── DriftError             a drift check cannot be made (no snapshot, too few rows, other bins)
"""

from __future__ import annotations


class FedcrmError(Exception):
    """Base class. ``hint`` says what the user should do about it."""

    def __init__(self, message: str, *, hint: str | None = None, region: str | None = None):
        self.message = message
        self.hint = hint
        self.region = region
        super().__init__(self.__str__())

    def __str__(self) -> str:
        prefix = f"[region {self.region}] " if self.region else ""
        text = f"{prefix}{self.message}"
        if self.hint:
            text += f"\n  → {self.hint}"
        return text


class ConfigError(FedcrmError):
    """The configuration (YAML file or CLI override) is invalid."""


class ContractError(FedcrmError):
    """A data contract is malformed, or the data does not have the columns it names."""


class ConnectorError(FedcrmError):
    """IO on a region's store failed. ``source`` names the store, never a credential."""

    def __init__(self, message: str, *, source: str, hint: str | None = None, region: str | None = None):
        self.source = source
        super().__init__(f"{message} (source: {source})", hint=hint, region=region)


class DataValidationError(FedcrmError):
    """A region's data failed one or more critical expectations of its contract."""

    def __init__(self, message: str, *, failures: list[str], hint: str | None = None, region: str | None = None):
        self.failures = failures
        super().__init__(message, hint=hint, region=region)


class FeatureError(FedcrmError):
    """Feature statistics could not be agreed, or a feature pipeline could not be applied."""


class TrainingError(FedcrmError):
    """Local training failed, e.g. the loss became non-finite."""


class PrivacyError(FedcrmError):
    """A privacy requirement cannot be met: δ not below 1/n, an ε the plan cannot reach, ..."""


class FederationError(FedcrmError):
    """The federation as a whole cannot proceed."""


class InsufficientRegionsError(FederationError):
    """Fewer regions than ``federation.min_regions`` remain after exclusions."""


class SecureAggregationError(FederationError):
    """Secure aggregation could not complete a step (see the subclasses)."""


class MessageRejectedError(SecureAggregationError):
    """A protocol message failed authentication or binding: unsigned, mis-signed, unknown sender,
    wrong job/round/phase/recipient, or replayed. ``sender`` is who the message *claims* to be from."""

    def __init__(self, message: str, *, sender: str | None = None, hint: str | None = None, region: str | None = None):
        self.sender = sender
        super().__init__(message, hint=hint, region=region)


class AggregationAbortedError(SecureAggregationError):
    """Too few parties remain to unmask the sum (below the threshold t); nothing was unmasked."""


class IdentityError(FedcrmError):
    """A party's identity key is missing, unreadable, or does not match the federation's keyring."""


class OrchestrationError(FedcrmError):
    """The orchestrator (Prefect's embedded API server) could not be started or reached."""


class DriftError(FedcrmError):
    """A drift (PSI) check cannot be made: no training snapshot, fewer than k rows, or different bins."""
