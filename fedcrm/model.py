"""The tabular model: an MLP (zero hidden layers = logistic regression) over pipeline features.

Models travel between regions and the coordinator as flat float64 parameter vectors, which is
what aggregation sums; ``get_vector``/``set_vector`` convert both ways in a fixed order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def build_model(n_features: int, hidden_sizes: list[int], *, seed: int = 0) -> nn.Module:
    """Deterministically initialised MLP returning one logit per row."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def get_vector(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(torch.float64).numpy().copy()


def set_vector(model: nn.Module, vector: np.ndarray) -> nn.Module:
    expected = sum(p.numel() for p in model.parameters())
    if vector.shape != (expected,):
        raise ValueError(f"parameter vector has shape {vector.shape}, the model needs ({expected},)")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(torch.from_numpy(np.asarray(vector[offset : offset + n])).reshape(p.shape).to(p.dtype))
            offset += n
    return model


def head_size(n_features: int, hidden_sizes: list[int]) -> int:
    """Parameters of the output layer (weights + bias), the last entries of a parameter vector."""
    return (hidden_sizes[-1] if hidden_sizes else n_features) + 1


def with_head(vector: np.ndarray, head: np.ndarray) -> np.ndarray:
    """A global body with a region's own output layer (personalisation: global and local parts)."""
    out = np.array(vector, dtype=np.float64, copy=True)
    out[len(out) - len(head) :] = head
    return out


def predict_proba(model: nn.Module, features: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(features)).reshape(-1)
    return torch.sigmoid(logits).to(torch.float64).numpy()
