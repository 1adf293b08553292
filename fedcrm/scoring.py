"""The deployable model (feature pipeline + MLP; MLflow's pyfunc is connectors/pyfunc_model.py) and what a region may score.

A scorer takes contract columns (raw values) and returns a score per record. It carries only
the fitted pipeline (contract vocabulary, pooled moments) and the model parameters. Batch
scoring scores only well-formed records whose consent allows activation, and reports counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from fedcrm.contract import OTHER, DataContract
from fedcrm.errors import ContractError
from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import SavedModel
from fedcrm.privacy.release import released_count
from fedcrm.records import parse_records


class Scorer:
    """Scores records with a global model (used in-region and inside the MLflow pyfunc), through the
    model's learner (``fedcrm/learners::make_predictor``)."""

    def __init__(self, pipeline: FeaturePipeline, model: SavedModel):
        from fedcrm.learners import make_predictor

        self.pipeline = pipeline
        self.predictor = make_predictor(pipeline, model)

    def score(self, records: pd.DataFrame) -> np.ndarray:
        """The learner's outputs for ``records`` (numeric columns as the contract's numbers)."""
        frame = records.copy()
        for feature in self.pipeline.numeric:
            frame[feature.name] = pd.to_numeric(frame[feature.name], errors="coerce")
        return self.predictor.predict(frame)


def synthetic_example(pipeline: FeaturePipeline, rows: int = 2) -> pd.DataFrame:
    """An input example built from the pipeline alone (pooled means, vocabulary): never a real record."""
    data: dict[str, list] = {}
    for feature in pipeline.numeric:
        data[feature.name] = [float(round(feature.mean + (i - rows // 2) * feature.std, 3)) for i in range(rows)]
    for feature in pipeline.categorical:
        levels = [*feature.vocabulary, OTHER]
        data[feature.name] = [levels[i % len(levels)] for i in range(rows)]
    return pd.DataFrame(data)


class ScoringBatch(BaseModel):
    """What a region may score now, and how many records were left out and why (counts only)."""

    model_config = {"arbitrary_types_allowed": True}

    records: pd.DataFrame
    """Typed contract columns of the records to score (never leaves the region)."""
    read: int
    malformed: int
    no_consent: int


class ScoringCounts(BaseModel):
    """The only thing a regional scoring run returns: counts (exact inside the region; what leaves
    is ``released(k)``: None below privacy.min_k, else rounded down to a multiple of it)."""

    region: str
    model_version: str
    personalised: bool = Field(False, description="Scored with the region's personalised model of the version's job.")
    read: int | None = 0
    malformed: int | None = Field(0, description="Records that failed the contract's parsing: not scored.")
    no_consent: int | None = Field(
        0, description="Records whose consent does not allow activation: never scored nor written.")
    scored: int | None = 0
    written: int | None = 0
    failed: int | None = Field(0, description="Write-back errors (record ids kept in the region's store).")
    failure_codes: dict[str, int | None] = Field(default_factory=dict)
    destination: str = ""
    count_granularity: int | None = Field(None, description="None: exact (in the region); k: released.")

    def released(self, k: int) -> ScoringCounts:
        if self.count_granularity is not None:
            return self
        def coarse(n: int | None) -> int | None:
            return None if n is None else released_count(n, k)
        return self.model_copy(update={
            **{name: coarse(getattr(self, name)) for name in ("read", "malformed", "no_consent", "scored", "written", "failed")},
            "failure_codes": {code: coarse(n) for code, n in self.failure_codes.items()},
            "count_granularity": k,
        })


def consent_allows(values: pd.Series, allowed: list[str]) -> pd.Series:
    """True where the consent value is one of ``allowed`` (case-insensitive, trimmed); blank is no."""
    accepted = {value.strip().lower() for value in allowed}
    text = values.astype("string").str.strip().str.lower()
    return text.isin(accepted).fillna(False).astype(bool)


def select_for_activation(raw: pd.DataFrame, contract: DataContract, *, consent_column: str | None,
                          consent_values: list[str], require_consent: bool, source: str = "records") -> ScoringBatch:
    """The records that may be scored and written back: well-formed, and with consent to activate."""
    if consent_column is None and require_consent:
        raise ContractError(
            f"use case {contract.use_case!r} has no consent column, so no record may be activated",
            hint="name the column with `consent_column` in the contract or `scoring.consent_column`; set "
                 "scoring.require_consent=false only where consent is enforced before records reach this source")
    if consent_column is not None and consent_column not in raw.columns:
        raise ContractError(f"{source} lacks the consent column {consent_column!r}",
                            hint="add it to the export, or fix scoring.consent_column")
    raw = raw.reset_index(drop=True)
    parsed = parse_records(raw, contract, source=source, scoring=True)
    well_formed = ~parsed.malformed
    consenting = (consent_allows(raw[consent_column], consent_values) if consent_column is not None
                  else pd.Series(True, index=raw.index))
    keep = well_formed & consenting
    records = parsed.frame.loc[keep, [contract.id_column, *contract.feature_columns]].reset_index(drop=True)
    return ScoringBatch(records=records, read=len(raw), malformed=int((~well_formed).sum()),
                        no_consent=int((well_formed & ~consenting).sum()))
