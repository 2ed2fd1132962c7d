"""Carriers: the secret key of a release.

C unit vectors in R^d, one per class, drawn i.i.d. Gaussian from a cryptographic random source
(``os.urandom``) and scaled to unit L2 norm. A :class:`Carriers` object never shows its values:
its repr and str give the shape, the marker id and the SHA-256 fingerprint only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

__all__ = [
    "Carriers",
    "draw_carriers",
    "load_carriers",
    "safetensors_metadata",
    "save_carriers",
]

_TENSOR_KEY = "carriers"
_FORMAT = "radtrace-carriers/1"


def _fingerprint(vectors: torch.Tensor) -> str:
    """SHA-256 over the shape and the little-endian float32 bytes of the vectors."""
    v = vectors.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
    h = hashlib.sha256()
    h.update(f"{_FORMAT}:{v.shape[0]}x{v.shape[1]}:".encode())
    h.update(v.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False, repr=False)
class Carriers:
    """C unit carriers in R^d.

    vectors: C×d float32 tensor on the CPU, rows of unit L2 norm. Keep it secret.
    marker_id: the marking network these directions live in (features of dimension d).
    """

    vectors: torch.Tensor = field(repr=False)
    marker_id: str = ""

    def __post_init__(self) -> None:
        v = self.vectors
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 2:
            raise ValueError("carriers must be a C×d tensor with C >= 1 and d >= 2")
        v = v.detach().to("cpu", torch.float32).contiguous()
        norms = v.norm(dim=1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
            raise ValueError("carrier rows must have unit L2 norm; use draw_carriers()")
        object.__setattr__(self, "vectors", v)

    @property
    def num_classes(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex digest of the vectors: safe to show and log."""
        return _fingerprint(self.vectors)

    def __repr__(self) -> str:
        return (
            f"Carriers(C={self.num_classes}, d={self.dim}, marker_id={self.marker_id!r}, "
            f"fingerprint={self.fingerprint[:16]}…)"
        )

    __str__ = __repr__

    def to_bytes(self) -> bytes:
        """Serialise as safetensors with metadata (d, C, marker id, fingerprint)."""
        meta = {
            "format": _FORMAT,
            "num_classes": str(self.num_classes),
            "dim": str(self.dim),
            "marker_id": self.marker_id,
            "sha256": self.fingerprint,
        }
        return st_save({_TENSOR_KEY: self.vectors}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Carriers:
        """Inverse of :meth:`to_bytes`; checks the stored fingerprint."""
        meta = safetensors_metadata(data)
        tensors = st_load(data)
        if _TENSOR_KEY not in tensors:
            raise ValueError("not a radtrace carriers file (no 'carriers' tensor)")
        out = cls(tensors[_TENSOR_KEY], marker_id=meta.get("marker_id", ""))
        expected = meta.get("sha256")
        if expected and expected != out.fingerprint:
            raise ValueError(
                "carriers file is corrupt: its SHA-256 does not match the fingerprint stored in it"
            )
        return out


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (radtrace's files keep their format there)."""
    header_len = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    if header_len <= 0 or header_len > len(data) - 8:
        raise ValueError("not a safetensors file")
    header = json.loads(data[8 : 8 + header_len])
    return dict(header.get("__metadata__", {}) or {})


def _gaussian_from_bytes(n: int, randbytes: Callable[[int], bytes]) -> np.ndarray:
    """n i.i.d. N(0, 1) draws from a byte source (Box-Muller on 53-bit uniforms)."""
    m = (n + 1) // 2
    raw = np.frombuffer(randbytes(16 * m), dtype="<u8").reshape(2, m)
    # 53-bit uniforms in (0, 1]: never 0, so the log is finite.
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
    return z[:n]


def draw_carriers(
    num_classes: int,
    dim: int,
    *,
    marker_id: str = "",
    randbytes: Callable[[int], bytes] = os.urandom,
) -> Carriers:
    """Draw C unit carriers in R^d from a cryptographic source.

    randbytes: the byte source (default ``os.urandom``). Tests may pass a seeded source; a
    release never should, since anyone holding the seed holds the key.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    z = _gaussian_from_bytes(num_classes * dim, randbytes).reshape(num_classes, dim)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return Carriers(torch.from_numpy(z.astype(np.float32)), marker_id=marker_id)


def save_carriers(carriers: Carriers, path: str | Path) -> str:
    """Write carriers to a local safetensors file; returns the fingerprint."""
    Path(path).write_bytes(carriers.to_bytes())
    return carriers.fingerprint


def load_carriers(path: str | Path) -> Carriers:
    """Read carriers written by :func:`save_carriers` (fingerprint checked)."""
    return Carriers.from_bytes(Path(path).read_bytes())
