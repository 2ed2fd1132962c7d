"""Small training loops (pure PyTorch; the caller picks the device).

- :func:`train_linear_probe`: multinomial logistic regression on frozen features (the paper's
  sec. 5.1 setting).
- :func:`train_classifier`: an image classifier trained the way a typical trainer would: random
  crop with zero padding and horizontal flip, SGD with Nesterov momentum, a one-cycle learning
  rate schedule. It is the suspect trainer of experiments and the demo, and the way a data owner
  trains its own marker and clean reference model.
- :func:`log_probabilities` and :func:`accuracy` evaluate a classifier in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LinearProbeConfig",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "log_probabilities",
    "random_crop_flip",
    "train_classifier",
    "train_linear_probe",
]


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


@dataclass(frozen=True)
class TrainConfig:
    """A standard small-image recipe: pad-and-crop + flip, SGD (Nesterov), one-cycle schedule."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.05  # peak learning rate of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    pad: int = 2  # random crop after zero padding by this many pixels (4 for 32 px images)
    flip: bool = True
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("lr must be > 0, momentum in [0, 1) and weight_decay >= 0")
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0, got {self.pad}")


@dataclass(frozen=True)
class TrainResult:
    """What a training run measured: mean training loss per epoch, seconds per epoch."""

    loss_per_epoch: tuple[float, ...]
    seconds_per_epoch: tuple[float, ...]


def random_crop_flip(
    x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image random crop of the zero-padded batch (same size back) and horizontal flip.

    x: B×C×H×W float. Offsets and flips are drawn on the CPU (reproducible with ``generator``).
    """
    b, _, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # B×H×1
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # B×1×W
        batch = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # B×C×H×W
    if flip:
        mirror = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x


def _normalise(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    cfg: TrainConfig = TrainConfig(),
    generator: torch.Generator | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``images`` (N×C×H×W uint8, on the model's device).

    labels: N int64. mean/std: per-channel normalisation the model expects (after /255).
    on_batch(epoch, batch, loss) is called after every step (progress bars).
    """
    if images.ndim != 4 or labels.shape != (images.shape[0],):
        raise ValueError("images must be N×C×H×W and labels must have shape (N,)")
    n = images.shape[0]
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.momentum > 0,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.25
    )
    losses, seconds = [], []
    model.train()
    for epoch in range(cfg.epochs):
        start, total = time.perf_counter(), 0.0
        order = torch.randperm(n, generator=generator).to(images.device)
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            x = random_crop_flip(_normalise(images[idx], mean, std), cfg.pad, cfg.flip, generator)
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            total += value * idx.numel()
            if on_batch is not None:
                on_batch(epoch, b, value)
        losses.append(total / n)
        seconds.append(time.perf_counter() - start)
    model.eval()
    return TrainResult(tuple(losses), tuple(seconds))


@torch.no_grad()
def log_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int = 1000,
) -> torch.Tensor:
    """log softmax outputs: images N×C×H×W (uint8 or float in [0, 1]) -> N×K float32."""
    model.eval()
    out = [
        F.log_softmax(model(_normalise(images[i : i + batch_size], mean, std)).float(), dim=1)
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0)


def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> float:
    """Top-1 accuracy on ``images`` (N×C×H×W) against ``labels`` (N)."""
    pred = log_probabilities(model, images, mean, std).argmax(1)
    return float((pred.cpu() == labels.cpu()).float().mean())
