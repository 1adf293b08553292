"""The second learner: gradient-boosted random trees under record-level DP, federated by summing
noisy leaf statistics through secure aggregation. Pure numpy: no torch in the region or the scorer.

The method is the one Maddock, Cormode, Wang, Maple and Jha (*Federated Boosted Decision Trees
with Differential Privacy*, ACM CCS 2022) find keeps most of the non-private utility at low ε in
exactly this setting (horizontal federation, DP, secure aggregation):

* **Totally random splits.** The coordinator draws every tree's structure before training, from
  ``training.seed`` and public facts only: at each node a feature (uniformly among the contract's
  features; for a categorical one, then one of its levels) and a threshold (numeric: a standard
  normal draw truncated to the feature's public z-range, from the contract's bounds and the DP
  moments of the pipeline; a level: 0.5). No record is read to choose a split, so no budget is
  spent on splits: all of it goes to the leaf values.
* **Leaf values from noisy gradient and hessian sums.** In a round each region computes, over its
  own training rows and the current ensemble's prediction p, the sums per leaf of g = p − y and
  h = p(1 − p) for the round's batch of B trees. The logistic loss bounds them without clipping
  (g ∈ [−1, 1], h ∈ [0, ¼]); a record is in exactly one leaf of each tree, so adding or removing one
  record changes the release by at most Δ = √(B · (1 + 1/16)) in L2 (``release_sensitivity``,
  property-tested on neighbouring data sets). The region adds Gaussian noise of σ · Δ (the CSPRNG)
  and contributes the result to the round's secure sum.
* **Batched boosting.** The B trees of a round are grown on the same gradients and their Newton
  leaf values averaged (× 1/B) and shrunk (× ``learning_rate``): the round's step is a small
  random forest, far less noisy than B sequential trees.
* **Accounting.** Each round is one Gaussian mechanism over every record (sampling rate 1) of
  sensitivity Δ, composed over the rounds by the region's accountant (``ReleaseShape(full_batch=True)``),
  so σ depends only on (ε, δ, rounds): the same in every region.

The coordinator turns the sum into leaf values, v = −η/B · clip(G / (H + λ), ±4), with λ = S and
v = 0 where H < ``leaf_signal``/2 · S, where S = σΔ√m is the public standard deviation of the summed
noise over m contributors (an empty or tiny leaf is noise, not signal). The tree depth is the rule
of ``tree_depth``: the deepest tree whose expected leaf hessian (¼ per record) is still
``leaf_signal`` × S, from the regions' released row counts.

The global model is one flat vector (``TreeEnsemble``): a header, then every tree slot's split
features, thresholds and leaf values; trees not yet grown have their structure and zero leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from fedcrm.aggregation import Aggregator, AggregateResult, Screen, pack_update, unpack_update_sum, update_bounds
from fedcrm.config import JobSpec, PrivacySpec, TreeSpec
from fedcrm.errors import PrivacyError, TrainingError
from fedcrm.features import FeaturePipeline
from fedcrm.learners.base import LocalUpdate, SavedModel
from fedcrm.privacy.plan import PrivacyPlan, ReleaseShape
from fedcrm.records import TARGET
from fedcrm.strategies import Strategy

HEADER = ("depth", "slots", "grown", "batch", "noise_multiplier", "learning_rate", "leaf_signal", "n_features")
MAX_AUTO_DEPTH = 6
MAX_NEWTON_STEP = 4.0
"""|G / (H + λ)| is capped: a leaf of nearly pure labels has H → 0 and would jump the margin."""
NOISE_MARGIN = 12.0
"""Secure aggregation's bound on a noisy sum: the exact bound plus 12 noise sd (exceeded w.p. < 10⁻³²)."""
G_BOUND, H_BOUND = 1.0, 0.25


def release_sensitivity(trees_per_round: int) -> float:
    """L2 sensitivity of one round's release: a record adds (g, h), |g| ≤ 1, 0 ≤ h ≤ ¼, to one leaf of each tree."""
    return math.sqrt(trees_per_round * (G_BOUND**2 + H_BOUND**2))


def summed_noise_std(noise_multiplier: float, trees_per_round: int, contributors: int) -> float:
    """The standard deviation of the noise on each coordinate of the summed release (0 without DP)."""
    return noise_multiplier * release_sensitivity(trees_per_round) * math.sqrt(max(contributors, 1))


def tree_depth(spec: TreeSpec, public_rows: list[int], noise_multiplier: float | None) -> int:
    """``trees.depth`` if set, else the deepest tree (1–6) whose expected leaf hessian at the start (¼ per
    record, N/(4 · 2^d) over the N released training rows) is at least ``leaf_signal`` × the summed noise sd.
    Public inputs only: the released row counts, the number of regions and σ (a function of ε, δ, rounds)."""
    if spec.depth is not None:
        return spec.depth
    if not noise_multiplier:
        return MAX_AUTO_DEPTH
    noise = summed_noise_std(noise_multiplier, spec.trees_per_round, len(public_rows))
    ratio = sum(public_rows) / (4.0 * spec.leaf_signal * noise)
    return int(min(MAX_AUTO_DEPTH, max(1, math.floor(math.log2(ratio)) if ratio > 0 else 1)))


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(margin, -35.0, 35.0)))


@dataclass(frozen=True)
class TreeEnsemble:
    """The global model as a flat vector: header, then per slot features, thresholds and leaves (heap order)."""

    vector: np.ndarray

    def __post_init__(self) -> None:
        if self.vector.size < len(HEADER):
            raise TrainingError("the vector is not a boosted-tree model (too short)", hint="score it with the learner that made it")
        expected = len(HEADER) + self.slots * self.slot_size
        if self.vector.size != expected:
            raise TrainingError(f"the boosted-tree model has {self.vector.size} values, its header says {expected}",
                                hint="the model is corrupt or was made by another learner")

    def _header(self, name: str) -> float:
        return float(self.vector[HEADER.index(name)])

    @property
    def depth(self) -> int:
        return int(self._header("depth"))

    @property
    def slots(self) -> int:
        return int(self._header("slots"))

    @property
    def grown(self) -> int:
        return int(self._header("grown"))

    @property
    def batch(self) -> int:
        return int(self._header("batch"))

    @property
    def noise_multiplier(self) -> float:
        return self._header("noise_multiplier")

    @property
    def n_features(self) -> int:
        return int(self._header("n_features"))

    @property
    def n_leaves(self) -> int:
        return 2**self.depth

    @property
    def slot_size(self) -> int:
        return 3 * self.n_leaves - 2

    def _slots(self) -> np.ndarray:
        return self.vector[len(HEADER):].reshape(self.slots, self.slot_size)

    def _parts(self, trees: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table, inner = self._slots()[trees], self.n_leaves - 1
        return table[:, :inner].astype(np.int64), table[:, inner:2 * inner], table[:, 2 * inner:]

    def leaf_index(self, features: np.ndarray, trees: slice) -> np.ndarray:
        """(rows × trees) leaf of each record in each tree of ``trees``."""
        split_on, thresholds, _ = self._parts(trees)
        n, width = features.shape[0], split_on.shape[0]
        node = np.zeros((n, width), dtype=np.int64)
        columns = np.arange(width)[None, :]
        for _ in range(self.depth):
            chosen = split_on[columns, node]
            right = features[np.arange(n)[:, None], chosen] > thresholds[columns, node]
            node = 2 * node + 1 + right
        return node - (self.n_leaves - 1)

    def margin(self, features: np.ndarray) -> np.ndarray:
        """The ensemble's log-odds for each record (grown trees only)."""
        if self.grown == 0 or len(features) == 0:
            return np.zeros(len(features))
        _, _, leaves = self._parts(slice(0, self.grown))
        index = self.leaf_index(features, slice(0, self.grown))
        return leaves[np.arange(self.grown)[None, :], index].sum(axis=1)

    def next_batch(self) -> slice:
        if self.grown + self.batch > self.slots:
            raise TrainingError(f"all {self.slots} trees of the model are grown",
                                hint="a job grows (training.rounds + training.personal_rounds) × trees.trees_per_round "
                                       "trees; start a new job")
        return slice(self.grown, self.grown + self.batch)

    def leaf_sums(self, features: np.ndarray, gradients: np.ndarray, hessians: np.ndarray) -> np.ndarray:
        """[G, H] per leaf of each tree of the next batch: (2 · batch · leaves) sums over the records."""
        index = self.leaf_index(features, self.next_batch())
        flat = (index + np.arange(self.batch)[None, :] * self.n_leaves).ravel()
        size = self.batch * self.n_leaves
        g = np.bincount(flat, weights=np.repeat(gradients, self.batch), minlength=size)
        h = np.bincount(flat, weights=np.repeat(hessians, self.batch), minlength=size)
        return np.concatenate([g, h])

    def grow(self, release: np.ndarray, contributors: int) -> TreeEnsemble:
        """The ensemble with the next batch's leaves set from a (summed, noisy) release of ``contributors`` regions."""
        batch, leaves_per_tree = self.batch, self.n_leaves
        if release.size != 2 * batch * leaves_per_tree or not np.all(np.isfinite(release)):
            raise TrainingError("the round's leaf statistics do not fit the model", hint="report this as a bug")
        g, h = release[: release.size // 2], release[release.size // 2:]
        noise = summed_noise_std(self.noise_multiplier, batch, contributors)
        regularisation, floor = max(noise, 1.0), self._header("leaf_signal") / 2 * noise
        step = np.clip(-g / (np.maximum(h, 0.0) + regularisation), -MAX_NEWTON_STEP, MAX_NEWTON_STEP)
        step[h <= floor] = 0.0
        vector = self.vector.copy()
        table = vector[len(HEADER):].reshape(self.slots, self.slot_size)
        table[self.next_batch(), 2 * (leaves_per_tree - 1):] = (self._header("learning_rate") / batch) * step.reshape(batch, -1)
        vector[HEADER.index("grown")] = self.grown + batch
        return TreeEnsemble(vector)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1] != self.n_features:
            raise TrainingError(f"the model was grown on {self.n_features} features, the records give {features.shape[1]}",
                                hint="score with the feature pipeline saved beside the model")
        return _sigmoid(self.margin(features))


def _z_range(pipeline: FeaturePipeline, index: int) -> tuple[float, float]:
    """The public range of numeric feature ``index`` in model units: the contract bounds through the DP moments."""
    feature, clip = pipeline.numeric[index], pipeline.clip_z
    low = -clip if feature.min is None else max(-clip, (feature.min - feature.mean) / feature.std)
    high = clip if feature.max is None else min(clip, (feature.max - feature.mean) / feature.std)
    return low, max(low, high)


def draw_structures(pipeline: FeaturePipeline, slots: int, depth: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every tree's split features and thresholds, (slots × 2^depth − 1) each, from ``seed`` and the pipeline alone."""
    rng, normal = np.random.default_rng(seed), NormalDist()
    numeric = len(pipeline.numeric)
    offsets, first = [], numeric
    for feature in pipeline.categorical:
        offsets.append((first, len(feature.levels)))
        first += len(feature.levels)
    ranges = [_z_range(pipeline, j) for j in range(numeric)]
    inner = 2**depth - 1
    split_on = np.zeros((slots, inner))
    thresholds = np.zeros((slots, inner))
    choices = rng.integers(numeric + len(offsets), size=(slots, inner))
    uniforms = rng.uniform(size=(slots, inner))
    levels = rng.integers(1 << 30, size=(slots, inner))
    for (t, node), choice in np.ndenumerate(choices):
        if choice < numeric:
            low, high = ranges[choice]
            a, b = normal.cdf(low), normal.cdf(high)
            u = min(max(a + (b - a) * uniforms[t, node], 1e-12), 1 - 1e-12)
            split_on[t, node], thresholds[t, node] = choice, min(max(normal.inv_cdf(u), low), high)
        else:
            start, count = offsets[choice - numeric]
            split_on[t, node], thresholds[t, node] = start + levels[t, node] % count, 0.5
    return split_on, thresholds


@dataclass(frozen=True)
class TreeLearner:
    config: JobSpec
    name: str = "boosted_trees"

    @property
    def spec(self) -> TreeSpec:
        return self.config.training.trees

    def release_shape(self, privacy: PrivacySpec) -> ReleaseShape:
        return ReleaseShape(full_batch=True, sensitivity=release_sensitivity(self.spec.trees_per_round))

    def initial(self, pipeline: FeaturePipeline, public_rows: list[int] | None = None,
                noise_multiplier: float | None = None) -> np.ndarray:
        """Every tree's structure (drawn from ``training.seed``), zero leaves, and the header; the depth by
        ``tree_depth`` from the released row counts and the regions' σ."""
        spec, training = self.spec, self.config.training
        depth = tree_depth(spec, public_rows or [], noise_multiplier)
        slots = (training.rounds + training.personal_rounds) * spec.trees_per_round  # the last: each region's own
        split_on, thresholds = draw_structures(pipeline, slots, depth, training.seed)
        header = [depth, slots, 0, spec.trees_per_round, noise_multiplier or 0.0, spec.learning_rate, spec.leaf_signal,
                  pipeline.n_features]
        table = np.hstack([split_on, thresholds, np.zeros((slots, 2**depth))])
        return np.concatenate([np.asarray(header, dtype=np.float64), table.ravel()])

    def train(self, train: pd.DataFrame, pipeline: FeaturePipeline, global_vector: np.ndarray, *,
              plan: PrivacyPlan | None, seed: int, prox_mu: float = 0.0) -> LocalUpdate:
        """``local_epochs`` boosting steps on the region's rows alone (1 in a federated round, whose release
        is the contribution; a local-only baseline takes them all). Each step releases the next batch's
        noisy leaf sums (σ · Δ of the plan, the job's randomness) and grows it from them."""
        from fedcrm.regional import randomness

        model = TreeEnsemble(np.asarray(global_vector, dtype=np.float64))
        if len(train) == 0:
            raise TrainingError("the region has no training rows", hint="check its validation report and quarantine")
        if plan is not None and not math.isclose(plan.max_grad_norm, release_sensitivity(model.batch)):
            raise PrivacyError(f"the privacy plan was made for sensitivity {plan.max_grad_norm:.4g}, the model grows "
                               f"{model.batch} trees per round", hint="report this as a bug")
        features = pipeline.transform(train).astype(np.float64)
        labels = train[TARGET].to_numpy(dtype=np.float64)
        noise = None if plan is None else randomness(self.config, seed).noise
        std = 0.0 if plan is None else plan.noise_multiplier * plan.max_grad_norm
        loss, release = float("nan"), None
        for step in range(self.config.training.local_epochs):
            p = _sigmoid(model.margin(features))
            if step == 0:
                loss = float(-np.mean(labels * np.log(np.clip(p, 1e-12, None)) + (1 - labels) * np.log(np.clip(1 - p, 1e-12, None))))
            release = model.leaf_sums(features, p - labels, p * (1 - p))
            if noise is not None:
                release = release + std * noise.standard_normal(release.size)
            model = model.grow(release, contributors=1)
        return LocalUpdate(vector=model.vector, n_examples=len(train), mean_loss=loss,
                           steps=self.config.training.local_epochs, release=release)

    def contribution(self, global_vector: np.ndarray, update: LocalUpdate, weight: int) -> np.ndarray:
        """[noisy G and H per leaf, n·loss, n] with n the released row count."""
        if update.release is None:
            raise TrainingError("the boosted-tree update carries no leaf statistics", hint="report this as a bug")
        return np.concatenate([update.release, pack_update(np.empty(0), weight, update.mean_loss)])

    def contribution_bounds(self, global_vector: np.ndarray, max_weight: float) -> np.ndarray:
        """|G|, |H| ≤ W (each record adds at most 1) plus the noise margin; then n·loss and n."""
        model = TreeEnsemble(np.asarray(global_vector, dtype=np.float64))
        noise = summed_noise_std(model.noise_multiplier, model.batch, 1)
        sums = np.full(2 * model.batch * model.n_leaves, float(max_weight) + NOISE_MARGIN * noise)
        return np.concatenate([sums, update_bounds(0, max_weight, 0.0)])

    def screen(self, global_vector: np.ndarray) -> Screen:
        """Plain mode's check of a region's contribution: its sums within what its released count allows."""
        bounds = self.contribution_bounds(global_vector, 1.0)
        margin = float(bounds[0]) - 1.0

        def screen(packed: np.ndarray) -> str | None:
            n = float(packed[-1])
            if n < 0.5:
                return "contribution with no training examples"
            largest = float(np.max(np.abs(packed[:-2]), initial=0.0))
            return (f"leaf statistics of size {largest:.4g} exceed what {n:.0f} records and the noise allow"
                    if largest > n + margin else None)

        return screen

    def next_model(self, strategy: Strategy, aggregator: Aggregator, global_vector: np.ndarray,
                   result: AggregateResult) -> tuple[np.ndarray, float, float]:
        """Grow the round's batch from the summed statistics; returns (vector, mean loss, the largest
        fixed-point error of a summed statistic under secure aggregation)."""
        totals = unpack_update_sum(result.total)
        model = TreeEnsemble(np.asarray(global_vector, dtype=np.float64))
        grown = model.grow(np.asarray(result.total[:-2], dtype=np.float64), contributors=len(result.contributors))
        return grown.vector, totals.mean_loss, float(np.max(result.error_bound[:-2], initial=0.0))

    def predict(self, pipeline: FeaturePipeline, vector: np.ndarray, records: pd.DataFrame) -> np.ndarray:
        return TreePredictor(pipeline, vector).predict(records)

    def save(self, vector: np.ndarray) -> SavedModel:
        return SavedModel(learner=self.name, hidden_sizes=[], parameters=np.asarray(vector, dtype=np.float64).tolist())


class TreePredictor:
    """A saved boosted-tree model scoring records: its vector describes itself (depth, trees, leaves)."""

    def __init__(self, pipeline: FeaturePipeline, vector: np.ndarray | list[float]):
        self.pipeline = pipeline
        self.model = TreeEnsemble(np.asarray(vector, dtype=np.float64))

    def predict(self, records: pd.DataFrame) -> np.ndarray:
        return self.model.probabilities(self.pipeline.transform(records).astype(np.float64))
