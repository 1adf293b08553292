"""Local training inside a region (the region-side half of a federated round).

Kept apart from orchestration, like Flower's ``task.py``: a pure function from the global
parameter vector and the region's features to the region's new parameter vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedcrm.config import TrainingSpec
from fedcrm.errors import TrainingError
from fedcrm.model import build_model, get_vector, set_vector


@dataclass(frozen=True)
class LocalUpdate:
    """What a region returns from a round: parameters, example count and mean training loss."""

    vector: np.ndarray
    n_examples: int
    mean_loss: float


def positive_weight(labels: np.ndarray, weighting: str) -> float:
    """BCE positive-class weight: negatives/positives when balancing, else 1."""
    positives = float(labels.sum())
    negatives = float(len(labels) - positives)
    if weighting == "none" or positives == 0 or negatives == 0:
        return 1.0
    return negatives / positives


def train_locally(
    global_vector: np.ndarray,
    features: np.ndarray,
    labels: np.ndarray,
    spec: TrainingSpec,
    *,
    pos_weight: float,
    seed: int,
) -> LocalUpdate:
    """Run ``spec.local_epochs`` of minibatch SGD from the global model on this region's rows."""
    if len(features) == 0:
        raise TrainingError("the region has no training rows", hint="check its validation report and quarantine")
    torch.manual_seed(seed)
    model = set_vector(build_model(features.shape[1], spec.hidden_sizes), global_vector)
    optimiser = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(spec.local_epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), spec.batch_size):
            idx = order[start : start + spec.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(x[idx]).reshape(-1), y[idx])
            if not torch.isfinite(loss):
                raise TrainingError(
                    "local training loss became non-finite",
                    hint="lower training.learning_rate, or check the region's features",
                )
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    vector = get_vector(model)
    if not np.all(np.isfinite(vector)):
        raise TrainingError("local training produced non-finite parameters", hint="lower training.learning_rate")
    return LocalUpdate(vector=vector, n_examples=len(x), mean_loss=float(np.mean(losses)))
