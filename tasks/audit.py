"""Audits: load a suspect model without unpickling, load held-out images, run the white-box test.

A suspect reference is one of: an MLflow model URI (``models:/name@alias``, ``models:/name/3``,
``runs:/<id>/model``), a registered model name (its latest version), a folder or URL holding
``model.safetensors`` + ``arch.json``, or a ``.pt``/``.pth`` state-dict checkpoint (read with
``torch.load(weights_only=True)``) together with an ``arch.json`` given separately.

Besides the analytic p-value, every white-box audit measures its own null: the same statistic
with many freshly drawn carrier sets (which the model cannot have seen). The figure shows the
observed value against that empirical null; ``null_p_below`` says how many null draws reached it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from radcore.carriers import Carriers, draw_carriers
from radcore.detect import WhiteboxDetection, detect_whitebox, whitebox_features
from radcore.markers import Marker
from radcore.nets import last_linear
from tasks import storage
from tasks.models import classifier_from_bytes, state_bytes
from tasks.shards import read_index
from tasks.tario import iter_tar_samples

__all__ = [
    "Suspect",
    "WhiteboxAudit",
    "load_heldout",
    "load_suspect",
    "suspect_transform",
    "verdict",
    "whitebox_audit",
]

NULL_DRAWS = 200


@dataclass(frozen=True, eq=False)
class Suspect:
    """A loaded suspect: the network (eval mode), its architecture record and identity."""

    model: nn.Module
    arch: dict[str, Any]
    ref: str
    weights_sha256: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_suspect(ref: str, *, arch: str | None = None, trust_pickle: bool = False) -> Suspect:
    """Load the model ``ref`` names (see the module docstring); never unpickles unless
    ``trust_pickle`` and the model is a pickled MLflow model."""
    if ref.endswith((".pt", ".pth")) and storage.exists(ref):
        if arch is None:
            raise ValueError(
                f"{ref} is a bare state dict: pass its architecture with --arch arch.json "
                '(e.g. {"arch": "vgg_small", "num_classes": 10, "in_channels": 1, ...})'
            )
        record = json.loads(storage.read_bytes(arch))
        state = torch.load(
            io.BytesIO(storage.read_bytes(ref)), map_location="cpu", weights_only=True
        )
        model = _module_from_state(record, state)
        return Suspect(model, record, ref, _sha(state_bytes(model)))
    mlflow_ref = ref.startswith(("models:/", "runs:/"))
    if not mlflow_ref and ("://" not in ref or ref.startswith(("file://", "s3://"))):
        folder_weights = storage.join(ref, "model.safetensors")
        if storage.exists(folder_weights):
            record = json.loads(storage.read_bytes(storage.join(ref, "arch.json")))
            weights = storage.read_bytes(folder_weights)
            return Suspect(classifier_from_bytes(record, weights), record, ref, _sha(weights))
        if storage.exists(ref):
            raise ValueError(
                f"{ref} holds no model.safetensors + arch.json: point at a radtrace model "
                "folder, a .pt state dict with --arch, or an MLflow model URI"
            )
    from tasks.tracking import load_state, resolve_model

    resolved = resolve_model(ref)
    state, record = load_state(resolved, trust_pickle=trust_pickle)
    if "module" in record:  # a trusted pickled model: use the module as it is
        model = record["module"].eval()
        record = {k: v for k, v in record.items() if k != "module"}
    else:
        model = _module_from_state(record, state)
    return Suspect(
        model,
        record,
        ref,
        _sha(state_bytes(model)),
        resolved.name,
        resolved.version,
        resolved.run_id,
    )


def _module_from_state(record: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    from tasks.models import build_model

    model = build_model(record)
    model.load_state_dict(state, strict=True)
    return model.eval()


def suspect_transform(arch: dict[str, Any]):
    """The suspect's input preprocessing from its record: channels, then mean/std."""
    mean = torch.tensor(arch.get("mean", [0.0])).view(1, -1, 1, 1)
    std = torch.tensor(arch.get("std", [1.0])).view(1, -1, 1, 1)
    want = int(arch.get("in_channels", 1))

    def transform(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and want == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and want == 1:
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        return (x - mean.to(x.device)) / std.to(x.device)

    return transform


def load_heldout(url: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``limit`` images of a shard folder, in index order: N×C×H×W uint8 and N labels."""
    index = read_index(url)
    images, labels = [], []
    for info in index.shards:
        for s in iter_tar_samples(storage.join(url, info.name)):
            with Image.open(io.BytesIO(s["png"])) as im:
                arr = np.asarray(im)
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(int(s["cls"]))
            if len(images) == limit:
                break
        if len(images) == limit:
            break
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(
            f"held-out images in {url} have several sizes {sorted(shapes)[:3]}: use one size"
        )
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


@dataclass(frozen=True)
class WhiteboxAudit:
    """The white-box result plus its empirical null from fresh carrier sets."""

    detection: WhiteboxDetection
    null_log10_p: tuple[float, ...]  # the statistic with NULL_DRAWS fresh carrier sets

    @property
    def null_p_below(self) -> float:
        """Share of null draws at or below the observed log10 p (a sanity check, not the p)."""
        null = np.array(self.null_log10_p)
        return float((null <= self.detection.log10_p).mean()) if len(null) else float("nan")


@torch.no_grad()
def whitebox_audit(
    suspect: Suspect,
    marker: Marker,
    carriers: Carriers,
    images: torch.Tensor,
    null_draws: int = NULL_DRAWS,
) -> WhiteboxAudit:
    """The paper's white-box test on held-out vanilla images, with an empirical null."""
    if images.shape[0] < 20:
        raise ValueError(f"{images.shape[0]} held-out images are too few: use at least 20")
    fm, fs = whitebox_features(marker, suspect.model, images, suspect_transform(suspect.arch))
    weight = last_linear(suspect.model).weight
    detection = detect_whitebox(fm, fs, weight, carriers)
    null = []
    for _ in range(null_draws):
        fresh = draw_carriers(carriers.num_classes, carriers.dim, marker_id="null")
        null.append(detect_whitebox(fm, fs, weight, fresh).log10_p)
    return WhiteboxAudit(detection, tuple(null))


def verdict(log10_p: float, alpha: float) -> str:
    """``"detected"`` when p <= alpha, else ``"not detected"``."""
    return "detected" if log10_p <= float(np.log10(alpha)) else "not detected"
