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

import dataclasses
import hashlib
import io
import json
import shlex
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from radcore.blackbox import BlackboxConfig, BlackboxDetection, blackbox_from_logprobs
from radcore.carriers import Carriers, draw_carriers
from radcore.detect import (
    WhiteboxDetection,
    detect_whitebox,
    mapped_rows,
    score_mapped_rows,
    whitebox_features,
)
from radcore.markers import Marker
from radcore.nets import last_linear
from radcore.probes import ProbeSet, pool_logprobs
from radcore.response import ResponseProbes, response_test, sensitivity
from tasks import storage
from tasks.models import classifier_from_bytes, state_bytes
from tasks.probes import load_probe_set

__all__ = [
    "Suspect",
    "WhiteboxAudit",
    "audit_evidence",
    "blackbox_audit",
    "blackbox_evidence",
    "combined_verdict",
    "load_suspect",
    "logprob_fn",
    "release_blackbox",
    "reproduce_command",
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
    w_tilde = mapped_rows(fm, fs, weight)  # one alignment serves every null draw
    null = []
    for _ in range(null_draws):
        fresh = draw_carriers(carriers.num_classes, carriers.dim, marker_id="null")
        null.append(score_mapped_rows(w_tilde, fresh).log10_p)
    return WhiteboxAudit(detection, tuple(null))


def logprob_fn(suspect: Suspect, batch_size: int = 1000):
    """Black-box access to a suspect: uint8 N×C×H×W -> N×K log-probabilities (no gradients,
    nothing but the outputs)."""
    transform = suspect_transform(suspect.arch)
    model = suspect.model.eval()

    @torch.no_grad()
    def fn(images: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].float() / 255.0
            out.append(torch.log_softmax(model(transform(x)).float(), dim=1))
        return torch.cat(out)

    return fn


def blackbox_audit(
    suspect: Suspect,
    probes: ProbeSet | ResponseProbes,
    reference: Suspect | None,
    cfg: BlackboxConfig = BlackboxConfig(),
) -> BlackboxDetection:
    """The black-box test on a release's cached probe set: the response test of
    :mod:`radcore.response` for pattern releases, else the permutation test of
    :mod:`radcore.blackbox`. The clean ``reference`` model (trained by the data owner) is
    subtracted (response) or a covariate (permutation) when given."""
    if isinstance(probes, ResponseProbes):
        sus = sensitivity(logprob_fn(suspect), probes)
        ref = sensitivity(logprob_fn(reference), probes) if reference is not None else None
        det = response_test(sus, probes.coefficients.numpy(), ref)
        return dataclasses.replace(det, num_probes=int(probes.labels.shape[0]))
    clean, marked = pool_logprobs(logprob_fn(suspect), probes)
    ref_clean = ref_marked = None
    if reference is not None:
        ref_clean, ref_marked = pool_logprobs(logprob_fn(reference), probes)
    return blackbox_from_logprobs(
        clean, marked, probes.labels, probes.true_index, ref_clean, ref_marked, cfg
    )


def verdict(log10_p: float, alpha: float) -> str:
    """``"detected"`` when p <= alpha, else ``"not detected"``."""
    return "detected" if log10_p <= float(np.log10(alpha)) else "not detected"


def combined_verdict(log10_ps: list[float], alpha: float) -> tuple[str, float]:
    """Several tests of one pair: Bonferroni, so the family-wise false-positive rate stays at
    alpha. Returns (verdict, log10 of the adjusted p = min(1, k · min p))."""
    k = len(log10_ps)
    adjusted = min(0.0, min(log10_ps) + float(np.log10(k)))
    return verdict(adjusted, alpha), adjusted


def release_blackbox(
    release_run: str, suspect: Suspect, reference: str | None, trust_pickle: bool
) -> tuple[BlackboxDetection | None, str | None]:
    """The black-box test when the release recorded a probe set (else ``(None, None)``); the
    clean reference is ``reference``, else the one the release recorded, else none.
    Returns (detection, the reference used)."""
    from tasks import tracking

    data = tracking.fetch_release_probes(release_run)
    if data is None:
        return None, None
    probes = load_probe_set(data)
    reference = reference or tracking.release_params(release_run).get("reference") or None
    ref_model = load_suspect(reference, trust_pickle=trust_pickle) if reference else None
    return blackbox_audit(suspect, probes, ref_model), reference


def reproduce_command(
    model: str, release_run: str, heldout: str, num: int, alpha: float, reference: str | None
) -> str:
    """The ``radtrace audit`` command line that repeats an audit."""
    parts = ["radtrace", "audit", model, "--release-run", release_run, "--heldout", heldout]
    parts += ["--num-heldout", str(num), "--alpha", str(alpha)]
    if reference:
        parts += ["--reference", reference]
    return shlex.join(parts)


def blackbox_evidence(bb: BlackboxDetection | None, reference: str | None) -> dict[str, Any]:
    """The black-box part of ``evidence.json``."""
    if bb is None:
        return {"ran": False, "why": "the release recorded no black-box probe set"}
    if bb.statistic == "response":
        name = (
            "black-box response test: the suspect's pull towards each class along the pattern "
            "basis (central differences on held-out probes, the clean reference's part "
            "removed), summed cosines with the key's pattern directions, exact Beta null "
            "(radcore.response)"
        )
    else:
        name = (
            "black-box: per-class response of the suspect to probes marked with the true "
            "carrier vs control carriers, regressed on a clean reference; Stouffer over "
            "classes; p by permuting carrier roles (radcore.blackbox)"
        )
    return {
        "ran": True,
        "name": name,
        "statistic": bb.statistic,
        "reference": reference,
        "num_probes": bb.num_probes,
        "pool_size": bb.num_carriers,
        "z": bb.z,
        "z_per_class": list(bb.z_per_class),
        "permutations": bb.permutations,
        "null_mean": bb.null_mean,
        "null_sd": bb.null_sd,
        "log10_p": bb.log10_p,
        "log10_p_permutation": bb.log10_p_permutation,
        "tail": bb.tail,
    }


def audit_evidence(
    model: str,
    suspect: Suspect,
    release: Any,
    heldout: str,
    num_heldout: int,
    whitebox: WhiteboxAudit,
    bb: BlackboxDetection | None,
    reference: str | None,
    alpha: float,
    time_utc: str,
) -> dict[str, Any]:
    """``evidence.json`` of one audit (no secrets), with the Bonferroni verdict of both tests.

    ``release``: a release record of :mod:`tasks.tracking` (run_id, release_url,
    carrier_fingerprint, marker_id).
    """
    det = whitebox.detection
    tests = [det.log10_p] + ([bb.log10_p] if bb is not None else [])
    decision, log10_p_adjusted = combined_verdict(tests, alpha)
    return {
        "model": {
            "ref": model,
            "name": suspect.name,
            "version": suspect.version,
            "weights_sha256": suspect.weights_sha256,
            "arch": suspect.arch,
        },
        "release": {
            "url": release.release_url,
            "mlflow_run_id": release.run_id,
            "carrier_fingerprint": release.carrier_fingerprint,
            "marker_id": release.marker_id,
        },
        "test": {
            "name": "white-box (Sablayrolles et al. 2020, sec. 4.2): least-squares alignment, "
            "cosine of mapped classifier rows with carriers, Beta null, Fisher combination",
            "heldout": heldout,
            "num_images": det.num_images,
            "dim": det.dim,
            "cosines": list(det.cosines),
            "log10_p_per_class": list(det.log10_p_per_class),
            "log10_p": det.log10_p,
            "empirical_null_draws": len(whitebox.null_log10_p),
            "empirical_null_share_at_or_below": whitebox.null_p_below,
        },
        "blackbox": blackbox_evidence(bb, reference),
        "decision_rule": "detected when min(p) x (number of tests) <= alpha (Bonferroni)",
        "log10_p_adjusted": log10_p_adjusted,
        "alpha": alpha,
        "verdict": decision,
        "time_utc": time_utc,
        "reproduce": reproduce_command(
            model, release.run_id, heldout, num_heldout, alpha, reference
        ),
    }
