"""Small training loops for experiments (pure PyTorch; the caller picks the device)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearProbeConfig", "train_linear_probe"]


@dataclass(frozen=True)
class LinearProbeConfig:
    """L2-regularised multinomial logistic regression fitted by L-BFGS."""

    weight_decay: float = 1e-3
    max_iter: int = 200


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    cfg: LinearProbeConfig = LinearProbeConfig(),
) -> nn.Linear:
    """Fit a linear classifier on frozen features (the paper's sec. 5.1 setting).

    features: n×d float; labels: n int64 in [0, num_classes). Returns an ``nn.Linear(d, C)``.
    """
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise ValueError("features must be n×d and labels must have shape (n,)")
    x = features.detach().float()
    y = labels.to(torch.long)
    head = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=cfg.max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + cfg.weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head.requires_grad_(False)
    return head
