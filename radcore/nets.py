"""Small image classifiers (markers a data owner trains, suspects in experiments) and helpers
to reach a classifier's penultimate layer.

Every classifier here ends in one ``nn.Linear`` whose input is the penultimate feature vector;
:func:`penultimate` returns those features for any such model, ours or not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "SmallResNet",
    "VGGSmall",
    "build_classifier",
    "last_linear",
    "penultimate",
]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class SmallResNet(nn.Module):
    """A ResNet for small images (28-64 px): one residual block per stage, global pooling and a
    linear head. Stages double the width and halve the resolution after the first.

    Input B×in_channels×H×W normalised by the caller; features of dimension ``widths[-1]``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 256),
    ) -> None:
        super().__init__()
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU()
        )
        blocks, cin = [], w0
        for i, w in enumerate(widths):
            blocks.append(_Block(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.feature_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


class VGGSmall(nn.Module):
    """A VGG-style network for small images: conv-conv-pool x3, a hidden FC layer, a linear head."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        w = width

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2),
            ]  # fmt: skip

        self.features = nn.Sequential(
            *stage(in_channels, w), *stage(w, 2 * w), *stage(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * w, 256), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(256, num_classes)
        self.feature_dim = 256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_resnet": SmallResNet,
    "vgg_small": VGGSmall,
}


def build_classifier(arch: str, num_classes: int, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build a classifier by architecture name (see ``ARCHITECTURES``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels, **kwargs)


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's classification layer: its last ``nn.Linear`` in module order."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer: white-box detection and the "
            "classifier marker need a model that ends in a linear classification layer"
        )
    return linears[-1]


def penultimate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)`` and capture the input of its last linear layer.

    Returns (features B×d', logits B×C). Gradients flow through both. Safe when several
    threads run the same model at once (a marker shared by a thread pool): a forward hook is
    global to the module, so each call only keeps what its own thread's forward passed.
    """
    captured: list[torch.Tensor] = []
    me = threading.get_ident()

    def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if threading.get_ident() == me:
            captured.append(inputs[0])

    handle = last_linear(model).register_forward_pre_hook(keep)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"the last linear layer ran {len(captured)} times in one forward")
    return captured[0].flatten(1), logits
