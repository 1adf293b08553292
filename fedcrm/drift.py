"""Feature drift as the population stability index (PSI), computed inside each region.

Bins come only from public things: the fitted ``FeaturePipeline`` of a model version (pooled
mean/std of each numeric column, the contract vocabulary of each categorical one) and the
configured cut points. So every region bins the same way, and no bin edge is a quantile of
anyone's data.

* numeric column: z = (x − pooled mean) / pooled std, cut at ``z_edges`` (default
  −2, −1, −0.5, 0, 0.5, 1, 2, giving 8 bins from −∞ to +∞), plus a bin for blanks;
* categorical column: one bin per vocabulary level, ``__other__`` for anything else, plus a bin
  for blanks.

Flow of a check:

1. while a region trains, ``histogram`` counts its training frame per bin (``FeatureHistograms``)
   and the region keeps that snapshot in its own store; it is never sent anywhere;
2. later the region counts its current records with the same pipeline;
3. ``drift_report`` turns both into one PSI per feature. Only that report (PSI values, which
   features drifted, and the two row counts, each at least ``min_k`` and rounded down to a
   multiple of it) leaves the region.

PSI with additive smoothing α (``psi``): with B bins, p_i = (e_i + α) / (Σe + αB) and
q_i = (a_i + α) / (Σa + αB), PSI = Σ_i (q_i − p_i) · ln(q_i / p_i). It is the symmetrised
Kullback–Leibler divergence of the smoothed distributions, so it is ≥ 0, 0 for identical counts,
symmetric in its arguments and finite even when a bin is empty on one side. The usual reading:
< 0.1 stable, 0.1–0.2 moderate shift, > 0.2 significant shift.

Pure: no Prefect, no torch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fedcrm.contract import OTHER, DataContract
from fedcrm.errors import DriftError
from fedcrm.features import FeaturePipeline
from fedcrm.privacy.release import describe_count, released_count
from fedcrm.records import parse_records

MISSING = "__missing__"
"""The bin of blank cells, for every feature."""

DEFAULT_Z_EDGES: tuple[float, ...] = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
"""Interior cut points of numeric bins, in pooled standard deviations from the pooled mean."""

DEFAULT_SMOOTHING = 0.5
"""α added to every bin's count before PSI (Jeffreys-style): empty bins give finite values."""


def check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    """The cut points as a tuple; they must be finite and strictly increasing."""
    values = tuple(float(e) for e in edges)
    if not values or not all(math.isfinite(e) for e in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise DriftError(f"numeric bin cut points {list(values)} must be finite and strictly increasing",
                         hint="set drift.z_edges to e.g. [-2, -1, -0.5, 0, 0.5, 1, 2]")
    return values


def _fmt(z: float) -> str:
    return f"{z:g}"


def numeric_bins(edges: Sequence[float]) -> list[str]:
    """Bin labels (in z units) of a numeric feature: ``z<-2``, ``-2<=z<-1``, …, ``z>=2``, ``__missing__``."""
    edges = check_edges(edges)
    labels = [f"z<{_fmt(edges[0])}"]
    labels += [f"{_fmt(a)}<=z<{_fmt(b)}" for a, b in itertools.pairwise(edges)]
    labels.append(f"z>={_fmt(edges[-1])}")
    return [*labels, MISSING]


def categorical_bins(vocabulary: Sequence[str]) -> list[str]:
    return [*vocabulary, OTHER, MISSING]


class FeatureHistogram(BaseModel):
    """Counts of one feature per bin (stays in the region)."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["numeric", "categorical"]
    bins: list[str]
    counts: list[int]


class FeatureHistograms(BaseModel):
    """Per-feature bin counts of one frame: a region's training snapshot or its current records.

    Region-private: it holds exact counts per bin, some of which may be small. Only
    ``drift_report`` output leaves the region.
    """

    model_config = ConfigDict(frozen=True)
    use_case: str
    binning: str = Field(description="sha256 of the bin definition (pipeline and cut points); both sides must match.")
    z_edges: list[float] = Field(description="The numeric cut points used (a later check bins with the same ones).")
    n_rows: int = Field(ge=0)
    features: dict[str, FeatureHistogram]


def binning_fingerprint(pipeline: FeaturePipeline, edges: Sequence[float]) -> str:
    """Identifies the bins: the pipeline's public moments and vocabularies, and the cut points."""
    document = {"pipeline": pipeline.model_dump(mode="json"), "z_edges": list(check_edges(edges))}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _numeric_counts(values: pd.Series, mean: float, std: float, edges: tuple[float, ...]) -> list[int]:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    blank = ~np.isfinite(x)
    z = (x[~blank] - mean) / std
    index = np.searchsorted(np.asarray(edges), z, side="right")  # bin i holds edges[i-1] <= z < edges[i]
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [*map(int, counts), int(blank.sum())]


def _categorical_counts(values: pd.Series, vocabulary: list[str]) -> list[int]:
    text = values.astype("string").str.strip()
    blank = (text.isna() | (text == "")).to_numpy(dtype=bool)
    present = text[~blank]
    counts = [int((present == level).sum()) for level in vocabulary]
    return [*counts, int(len(present) - sum(counts)), int(blank.sum())]


def histogram(pipeline: FeaturePipeline, frame: pd.DataFrame, *,
              z_edges: Sequence[float] = DEFAULT_Z_EDGES) -> FeatureHistograms:
    """Count ``frame`` (typed records, as parsed) per bin of every feature of ``pipeline``."""
    edges = check_edges(z_edges)
    missing = [f.name for f in (*pipeline.numeric, *pipeline.categorical) if f.name not in frame.columns]
    if missing:
        raise DriftError(f"records lack feature column(s) {missing}",
                         hint="the records must follow the contract the model version was trained with")
    features: dict[str, FeatureHistogram] = {}
    for feature in pipeline.numeric:
        features[feature.name] = FeatureHistogram(
            kind="numeric", bins=numeric_bins(edges), counts=_numeric_counts(frame[feature.name], feature.mean, feature.std, edges))
    for feature in pipeline.categorical:
        features[feature.name] = FeatureHistogram(
            kind="categorical", bins=categorical_bins(feature.vocabulary),
            counts=_categorical_counts(frame[feature.name], feature.vocabulary))
    return FeatureHistograms(use_case=pipeline.use_case, binning=binning_fingerprint(pipeline, edges), z_edges=list(edges),
                             n_rows=len(frame), features=features)


def current_records(raw: pd.DataFrame, contract: DataContract, *, source: str = "records") -> pd.DataFrame:
    """A region's current records prepared as its training frame was: parsed, malformed rows left out,
    no value rewritten (so both sides are binned alike)."""
    return parse_records(raw, contract, source=source).clean


def psi(expected: Sequence[float], actual: Sequence[float], smoothing: float = DEFAULT_SMOOTHING) -> float:
    """Population stability index of ``actual`` against ``expected`` bin counts (see the module docstring).

    ``smoothing`` (α > 0) is added to every bin's count, so a bin empty on one side still gives a
    finite value.
    """
    e, a = np.asarray(expected, dtype="float64"), np.asarray(actual, dtype="float64")
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise DriftError(f"PSI needs two count vectors over the same bins, got shapes {e.shape} and {a.shape}",
                         hint="compare histograms made with the same feature pipeline and cut points")
    if not (smoothing > 0 and math.isfinite(smoothing)):
        raise DriftError(f"PSI smoothing must be a positive number, got {smoothing}", hint="set drift.smoothing > 0, e.g. 0.5")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(a)) and np.all(e >= 0) and np.all(a >= 0)):
        raise DriftError("PSI needs finite, non-negative counts", hint="report this as a bug")
    p = (e + smoothing) / (e.sum() + smoothing * e.size)
    q = (a + smoothing) / (a.sum() + smoothing * a.size)
    return float(max(0.0, np.sum((q - p) * np.log(q / p))))


class DriftReport(BaseModel):
    """What a region reveals about drift: one PSI per feature and two row counts (each ≥ k), nothing else."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    psi: dict[str, float] = Field(description="feature → PSI of the current records against the training snapshot.")
    drifted: list[str] = Field(description="Features whose PSI exceeds the threshold, highest first.")
    threshold: float
    n_baseline: int = Field(description="Training rows the snapshot counted (≥ privacy.min_k), rounded down to a multiple of k.")
    n_current: int = Field(description="Current rows counted (≥ privacy.min_k), rounded down to a multiple of k.")

    @property
    def max_psi(self) -> float:
        return max(self.psi.values(), default=0.0)


def drift_report(baseline: FeatureHistograms, current: FeatureHistograms, *, threshold: float, min_k: int,
                 smoothing: float = DEFAULT_SMOOTHING) -> DriftReport:
    """PSI of every feature; refused (``DriftError``) when either side has fewer than ``min_k`` rows
    or the two were binned differently."""
    for name, side in (("training snapshot", baseline), ("current records", current)):
        if side.n_rows < min_k:
            raise DriftError(f"the {name} hold {describe_count(side.n_rows, min_k)} row(s); drift needs at least "
                             f"privacy.min_k = {min_k}",
                             hint="PSI is only released as an aggregate over at least k rows: check the region's data")
    if baseline.binning != current.binning or set(baseline.features) != set(current.features):
        raise DriftError("the training snapshot was binned with another feature pipeline or other cut points",
                         hint="compare against the snapshot of the model version's own training job, with the "
                              "drift.z_edges it was trained with")
    values: dict[str, float] = {}
    for name, expected in baseline.features.items():
        actual = current.features[name]
        if expected.bins != actual.bins:
            raise DriftError(f"feature {name!r} has different bins in the snapshot and the current records",
                             hint="compare histograms made with the same feature pipeline")
        values[name] = psi(expected.counts, actual.counts, smoothing)
    drifted = sorted((n for n, v in values.items() if v > threshold), key=lambda n: -values[n])
    return DriftReport(psi=values, drifted=drifted, threshold=threshold,
                       n_baseline=released_count(baseline.n_rows, min_k), n_current=released_count(current.n_rows, min_k))


class RegionDrift(BaseModel):
    """One region's part in a drift check: its report, or why it was left out."""

    status: Literal["checked", "excluded"]
    report: DriftReport | None = None
    reason: str = ""


class DriftSummary(BaseModel):
    """The result of a federated drift check (PSI values and counts only)."""

    check_id: str
    use_case: str
    model_name: str
    champion_version: str
    baseline_job: str
    threshold: float
    regions: dict[str, RegionDrift]
    tracking: dict[str, str] = Field(default_factory=dict)
    retraining: dict[str, str] = Field(default_factory=dict)

    @property
    def drifted(self) -> dict[str, list[str]]:
        """Region → its drifted features, for the regions that have any."""
        return {r: e.report.drifted for r, e in self.regions.items() if e.report is not None and e.report.drifted}

    @property
    def max_psi(self) -> dict[str, float]:
        return {r: e.report.max_psi for r, e in self.regions.items() if e.report is not None}
