"""Local training inside a region (the region-side half of a federated round).

Kept apart from orchestration, like Flower's ``task.py``. Two trainers share one interface:

* ``SGDTrainer``: plain minibatch SGD (non-private; research baselines only). Its shuffling is
  seeded from ``training.seed``: reproducible, and it claims no privacy.
* ``DPSGDTrainer``: record-level DP-SGD with Opacus: Poisson sampling, per-sample gradient
  clipping to ``max_grad_norm`` and Gaussian noise of ``noise_multiplier × max_grad_norm``.
  Noise is added to clipped per-sample gradients at every step, never to the model delta.
  Both the batch memberships and the noise come from the job's ``Randomness``
  (``fedcrm.privacy.randomness``): the CSPRNG, never a public seed, unless research mode asks
  for seeded randomness, which is then warned next to every ε.

FedProx's proximal term is applied as a separate, data-independent step after each update, so
it is exact for both trainers and costs no privacy (Opacus would ignore a loss term that does
not flow through the per-sample hooks).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcrm.config import TrainingSpec
from fedcrm.errors import TrainingError
from fedcrm.learners.base import LocalUpdate
from fedcrm.model import build_model, get_vector, set_vector
from fedcrm.privacy.noise import NoiseSource
from fedcrm.privacy.randomness import Randomness
from fedcrm.privacy.plan import dp_steps_per_epoch
from fedcrm.privacy.sampling import BatchSampler

# Opacus' per-sample hooks on the first layer fire without input gradients by design (the data
# needs none); torch warns at every backward pass, which would flood each region's log.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")


class LocalTrainer(Protocol):
    def train(self, global_vector: np.ndarray, features: np.ndarray, labels: np.ndarray, *, seed: int) -> LocalUpdate: ...


def positive_weight(labels: np.ndarray, weighting: str) -> float:
    """BCE positive-class weight: negatives/positives when balancing, else 1."""
    positives = float(labels.sum())
    negatives = float(len(labels) - positives)
    if weighting == "none" or positives == 0 or negatives == 0:
        return 1.0
    return negatives / positives


def _tensors(features: np.ndarray, labels: np.ndarray) -> TensorDataset:
    if len(features) == 0:
        raise TrainingError("the region has no training rows", hint="check its validation report and quarantine")
    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)),
    )


def _fit(
    model: nn.Module, optimiser: torch.optim.Optimizer, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    spec: TrainingSpec, pos_weight: float, prox_mu: float, anchor: list[torch.Tensor], *, noise_on_empty: bool = False,
) -> tuple[float, int]:
    """Run the local epochs; returns (mean loss, optimiser steps drawn, empty batches included).

    ``noise_on_empty`` (DP-SGD): an empty Poisson batch is still a step of the sampled Gaussian
    mechanism the accountant analyses, so it adds the noise alone. Skipping it would make "this
    step's batch was empty" visible in the model."""
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
    losses, steps = [], 0
    model.train()
    for _ in range(spec.local_epochs):
        for xb, yb in loader:
            steps += 1
            optimiser.zero_grad()
            if len(xb) == 0:
                if not noise_on_empty:
                    continue
                for p in model.parameters():  # no record: zero per-sample gradients; Opacus clips none, adds noise
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
                optimiser.step()
            else:
                loss = loss_fn(model(xb).reshape(-1), yb)
                if not torch.isfinite(loss):
                    raise TrainingError("local training loss became non-finite", hint="lower training.learning_rate")
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            if prox_mu > 0:
                with torch.no_grad():
                    for p, p0 in zip(model.parameters(), anchor):
                        p.sub_(spec.learning_rate * prox_mu * (p - p0))
    return (float(np.mean(losses)) if losses else float("nan")), steps


def _finish(model: nn.Module, n: int, loss: float, steps: int) -> LocalUpdate:
    vector = get_vector(model)
    if not np.all(np.isfinite(vector)):
        raise TrainingError("local training produced non-finite parameters", hint="lower training.learning_rate")
    return LocalUpdate(vector=vector, n_examples=n, mean_loss=loss, steps=steps)


@dataclass(frozen=True)
class SGDTrainer:
    """Plain SGD. Its shuffling is seeded (``torch.Generator().manual_seed(seed)``): no privacy is
    claimed for it, so reproducibility costs nothing here. DP-SGD never uses such a seed."""

    spec: TrainingSpec
    pos_weight: float = 1.0
    prox_mu: float = 0.0

    def train(self, global_vector: np.ndarray, features: np.ndarray, labels: np.ndarray, *, seed: int) -> LocalUpdate:
        data = _tensors(features, labels)
        torch.manual_seed(seed)
        model = set_vector(build_model(features.shape[1], self.spec.hidden_sizes), global_vector)
        anchor = [p.detach().clone() for p in model.parameters()]
        loader = DataLoader(data, batch_size=self.spec.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
        optimiser = torch.optim.SGD(model.parameters(), lr=self.spec.learning_rate)
        loss, steps = _fit(model, optimiser, loader, self.spec, self.pos_weight, self.prox_mu, anchor)
        return _finish(model, len(data), loss, steps)


def _noised_optimizer(noise: NoiseSource, **arguments):
    """Opacus' ``DPOptimizer`` (per-sample clipping, accounting hooks) with its Gaussian noise drawn
    from ``noise`` instead of torch's generator: the only method that changes is ``add_noise``."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class SourcedNoiseDPOptimizer(DPOptimizer):
        def add_noise(self) -> None:
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                sample = torch.from_numpy(noise.standard_normal(p.summed_grad.numel()) * std)
                p.grad = (p.summed_grad + sample.to(p.summed_grad.dtype).view_as(p.summed_grad)).view_as(p)
                _mark_as_processed(p.summed_grad)

    return SourcedNoiseDPOptimizer(**arguments)


@dataclass(frozen=True)
class PoissonBatches:
    """One local epoch of Poisson-sampled batches (1/q steps), re-drawn at every iteration.

    Each step includes each row independently with probability ``sample_rate``, decided by
    ``sampler``; an empty batch is yielded as zero-row tensors (it still counts as a step)."""

    data: TensorDataset
    sample_rate: float
    sampler: BatchSampler

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        features, labels = self.data.tensors
        for _ in range(dp_steps_per_epoch(self.sample_rate)):  # as the plan counts them
            rows = torch.from_numpy(np.flatnonzero(self.sampler.poisson_mask(len(labels), self.sample_rate)))
            yield features[rows], labels[rows]


@dataclass(frozen=True)
class DPSGDTrainer:
    spec: TrainingSpec
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    expected_batch_size: int
    """Divisor of the noised gradient sum: q × the region's *released* row count (the configured batch
    size), a public number. Dividing by q × the exact count would make the model's scale a function of
    the exact count, which no DP mechanism protects."""
    pos_weight: float = 1.0
    prox_mu: float = 0.0
    randomness: Randomness = field(default_factory=Randomness)
    """Batch memberships and noise: the CSPRNG by default; seeded only from ``job_randomness`` in
    research mode, which carries the warning that the ε does not hold."""

    def __post_init__(self) -> None:
        if not isinstance(self.randomness, Randomness):  # a bare (seeded) source would bypass its warning
            raise TypeError("DPSGDTrainer takes a fedcrm.privacy.randomness.Randomness (see job_randomness)")
        if self.expected_batch_size < 1:
            raise ValueError("expected_batch_size must be at least 1")

    @property
    def noise(self) -> NoiseSource:
        return self.randomness.noise

    def train(self, global_vector: np.ndarray, features: np.ndarray, labels: np.ndarray, *, seed: int) -> LocalUpdate:
        """``seed`` is not used: batches and noise come from ``randomness``, never from a public seed."""
        from opacus import GradSampleModule

        data = _tensors(features, labels)
        model = GradSampleModule(set_vector(build_model(features.shape[1], self.spec.hidden_sizes), global_vector))
        anchor = [p.detach().clone() for p in model.parameters()]
        loader = PoissonBatches(data, self.sample_rate, self.randomness.sampler)
        optimiser = _noised_optimizer(
            self.randomness.noise,
            optimizer=torch.optim.SGD(model.parameters(), lr=self.spec.learning_rate),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=self.expected_batch_size,
        )
        loss, steps = _fit(model, optimiser, loader, self.spec, self.pos_weight, self.prox_mu, anchor, noise_on_empty=True)
        return _finish(model, len(data), loss, steps)


def train_locally(
    global_vector: np.ndarray, features: np.ndarray, labels: np.ndarray, spec: TrainingSpec, *, pos_weight: float, seed: int
) -> LocalUpdate:
    """Non-private local training (kept for tests and research baselines)."""
    return SGDTrainer(spec, pos_weight=pos_weight).train(global_vector, features, labels, seed=seed)
