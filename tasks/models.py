"""Networks from references: marking networks from a JSON spec, classifiers from safetensors.

A marker spec is a small JSON-able dict that travels between tasks instead of a network:

- ``{"kind": "registry", "name": "efficientnet-lite0", "kwargs": {"input_size": 64}}``: a
  marker from radcore's registry;
- ``{"kind": "classifier", "arch": {...}, "weights": URL}``: the penultimate layer of a
  classifier the data owner trained; ``arch`` is the architecture record radtrace stores next to
  every model it trains (``arch``, ``num_classes``, ``in_channels``, ``mean``, ``std``, optional
  ``kwargs`` and ``input_size``) and ``weights`` a safetensors state dict (any storage URL).

Weights are read with safetensors only: nothing here unpickles.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from radcore.markers import Marker, get_marker, marker_from_classifier
from radcore.nets import build_classifier
from tasks import storage

__all__ = [
    "arch_record",
    "build_model",
    "classifier_from_bytes",
    "load_marker",
    "marker_from_spec",
    "marker_spec_from_ref",
    "state_bytes",
]

_ARCH_KEYS = ("arch", "num_classes", "in_channels", "mean", "std")


def arch_record(
    arch: str,
    num_classes: int,
    in_channels: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The architecture record stored with a model: enough to rebuild it without pickle.
    ``in_channels``, ``mean`` and ``std`` may be left None for the training task to measure."""
    return {
        "arch": arch,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std),
        "kwargs": kwargs,
    }


def build_model(arch: dict[str, Any]) -> nn.Module:
    """An untrained classifier from an architecture record (see :func:`arch_record`)."""
    missing = [k for k in _ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"architecture record lacks {missing}: it needs {list(_ARCH_KEYS)}")
    kwargs = dict(arch.get("kwargs") or {})
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return build_classifier(arch["arch"], arch["num_classes"], arch["in_channels"], **kwargs)


def state_bytes(model: nn.Module) -> bytes:
    """The model's state dict as safetensors bytes (contiguous CPU copies)."""
    return st_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def classifier_from_bytes(arch: dict[str, Any], weights: bytes) -> nn.Module:
    """Rebuild a classifier from its record and safetensors weights (strict), in eval mode."""
    model = build_model(arch)
    model.load_state_dict(st_load(weights), strict=True)
    return model.eval()


def marker_from_spec(spec: dict[str, Any], weights: bytes | None = None) -> Marker:
    """Build the marker a spec describes; ``weights`` overrides reading ``spec["weights"]``."""
    kind = spec.get("kind")
    if kind == "registry":
        return get_marker(spec["name"], **(spec.get("kwargs") or {}))
    if kind == "classifier":
        arch = spec["arch"]
        if weights is None:
            weights = storage.read_bytes(spec["weights"])
        model = classifier_from_bytes(arch, weights)
        size = arch.get("input_size")
        return marker_from_classifier(
            model,
            in_channels=arch["in_channels"],
            mean=tuple(arch["mean"]),
            std=tuple(arch["std"]),
            input_size=tuple(size) if size else None,
            name=f"classifier-{arch['arch']}",
        )
    raise ValueError(
        f"marker spec kind {kind!r} is unknown: use 'registry' (a named network) or "
        "'classifier' (arch + weights URL)"
    )


@functools.lru_cache(maxsize=4)
def _cached_marker(spec_json: str) -> Marker:
    return marker_from_spec(json.loads(spec_json))


def load_marker(spec: dict[str, Any], device: str | torch.device = "cpu") -> Marker:
    """:func:`marker_from_spec`, built once per process per spec (workers mark many shards)."""
    return _cached_marker(json.dumps(spec, sort_keys=True)).to(device)


def marker_spec_from_ref(ref: str, input_size: int | None = None) -> dict[str, Any]:
    """A marker spec from what a user types.

    ``ref`` is a registry name (``efficientnet-lite0``, ``resnet18``), a folder or URL holding
    ``model.safetensors`` and ``arch.json`` (a classifier radtrace trained), or an MLflow model
    reference (``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/model``).
    """
    from radcore.markers import available_markers

    if ref in available_markers():
        kwargs = {"input_size": input_size} if input_size else {}
        return {"kind": "registry", "name": ref, "kwargs": kwargs}
    if ref.startswith(("models:/", "runs:/")):
        from tasks.tracking import resolve_model

        folder = str(resolve_model(ref).local_dir)
    else:
        folder = ref
    arch_url, weights_url = (
        storage.join(folder, "arch.json"),
        storage.join(folder, "model.safetensors"),
    )
    if not (storage.exists(arch_url) and storage.exists(weights_url)):
        raise ValueError(
            f"marker {ref!r} is neither a registered network ({available_markers()}) nor a "
            "folder with model.safetensors + arch.json, nor an MLflow model URI: fix --marker"
        )
    arch = json.loads(storage.read_bytes(arch_url))
    if input_size:
        arch["input_size"] = [input_size, input_size]
    return {"kind": "classifier", "arch": arch, "weights": weights_url}
