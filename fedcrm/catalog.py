"""Every storage key a region writes in its own store, named in one place (Kedro's catalog, made explicit).

A region's store (a folder, an S3 prefix, a PostgreSQL table) holds its records, its privacy
ledgers, its job working copies and its evidence. The tasks ask this catalog for a key instead of
formatting strings, so that what a region keeps, and what a finished job deletes (``workspace``),
is listed here and nowhere else. Pure naming: no IO, no Prefect.

Layout of a region's store (``<uc>`` the use case, ``<job>`` a job id, ``<population>`` a ledger's population):

========================================  =========================================================
key                                       what it holds (never sent unless docs/privacy.md says so)
========================================  =========================================================
``crm/<uc>.parquet``                      the region's records (embedded stand-in for its CRM)
``work/<uc>/<job>/``                      a job's working copies, deleted when the job ends
``privacy/<uc>/<job>.json``               the job's DP ledger (plan and rounds charged)
``privacy/<uc>/<job>-local-only.json``    the local-only baseline's DP ledger
``privacy/ledger/<population>.json``      the lifetime ledger (``connectors/ledger.py``)
``reports/<uc>/<job>/validation.json``    the validation report with exact counts
``quarantine/<uc>/<job>.parquet``         the malformed rows, with their reasons
``drift/<uc>/<job>.json``                 the job's training histograms for drift checks
``models/<uc>/<job>.json``                the region's personalised model of the job, and its choice
``scores/<uc>/…``                         batch scores and per-record scoring failures
``secrets/``, ``identity/``, ``audit/``   the fingerprint key, the party's keys, its audit log
========================================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

FINGERPRINT_KEY = "secrets/data-fingerprint-key.json"
"""The region's secret for keyed data fingerprints; it never leaves the region's store."""


@dataclass(frozen=True)
class JobKeys:
    """The keys of one job in one region."""

    use_case: str
    job_id: str

    @property
    def workspace(self) -> str:
        """The job's working copies: deleted as a whole when the job ends (finish, release, reconciliation)."""
        return f"work/{self.use_case}/{self.job_id}"

    def frame(self, name: str) -> str:
        """A prepared split of the job (``train`` or ``holdout``)."""
        return f"{self.workspace}/{name}.parquet"

    @property
    def train(self) -> str:
        return self.frame("train")

    @property
    def holdout(self) -> str:
        return self.frame("holdout")

    @property
    def prepared(self) -> str:
        """What preparation released (released counts, keyed fingerprint), kept to answer a resumed job."""
        return f"{self.workspace}/prepared.json"

    @property
    def local_head(self) -> str:
        """The region's own output layer (personalisation), from its last local training."""
        return f"{self.workspace}/local_head.json"

    @property
    def personalisation_result(self) -> str:
        """What the personal step answered, kept to answer a resumed job again (never trained twice)."""
        return f"{self.workspace}/personalisation.json"

    @property
    def personalised_model(self) -> str:
        """The region's personalised model of the job and whether it chose it: kept after the job, since the
        region scores with it while the job's version is the champion (never sent)."""
        return f"models/{self.use_case}/{self.job_id}.json"

    @property
    def local_only_result(self) -> str:
        return f"{self.workspace}/local_only.json"

    def secure_aggregation(self, attempt: int) -> str:
        """This region's secure-aggregation client state for one attempt of the job (fresh keys per attempt)."""
        return f"{self.workspace}/secure_aggregation-{attempt}.json"

    @property
    def ledger(self) -> str:
        """The job's own DP ledger: charged before the lifetime ledger, so a round is never trained twice."""
        return f"privacy/{self.use_case}/{self.job_id}.json"

    @property
    def local_only_ledger(self) -> str:
        return f"privacy/{self.use_case}/{self.job_id}-local-only.json"

    @property
    def validation_report(self) -> str:
        """The region's own validation report with the exact counts (kept in the region, never sent)."""
        return f"reports/{self.use_case}/{self.job_id}/validation.json"

    @property
    def quarantine(self) -> str:
        return f"quarantine/{self.use_case}/{self.job_id}.parquet"

    @property
    def drift_snapshot(self) -> str:
        """The job's training snapshot for drift checks (bin counts; kept in the region, never sent)."""
        return f"drift/{self.use_case}/{self.job_id}.json"


@dataclass(frozen=True)
class RegionCatalog:
    """The keys of one use case in a region's store."""

    use_case: str

    def job(self, job_id: str) -> JobKeys:
        return JobKeys(self.use_case, job_id)

    @property
    def records(self) -> str:
        """The region's records in embedded mode (``fedcrm data split`` writes them)."""
        return f"crm/{self.use_case}.parquet"

    @property
    def records_origin(self) -> str:
        return f"crm/{self.use_case}.origin.json"

    def scores(self, scored_at: datetime) -> str:
        return f"scores/{self.use_case}/{scored_at.strftime('%Y%m%dT%H%M%S%fZ')}.parquet"

    def scoring_failures(self, scored_at: datetime) -> str:
        """The ids and reasons of records a scoring run could not write back (kept in the region)."""
        return f"scores/{self.use_case}/failures-{scored_at.strftime('%Y%m%dT%H%M%SZ')}.json"
