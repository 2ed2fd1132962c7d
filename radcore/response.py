"""The response test: black-box detection of pattern marks with an exact null, no controls.

Not in the paper; designed and measured for radtrace (bench/scratch/2026-12-06/lin.py).

A pattern mark (:mod:`radcore.patterns`) of class c is the image sum_j u_cj b_j on the m basis
images b_j, where u_c, the class's coefficient vector, is a uniform direction in R^m (the first
m coordinates of its carrier, rescaled). A model trained on the marked release has learnt that
u_c's pattern means class c, so its class-c output rises along u_c.

1. Sensitivity. For every held-out probe image x (never seen by the marker, never released) and
   every basis image b_j, the suspect's log-probabilities on the stored 8-bit copies of
   x + a b_j and x - a b_j (a: the amplitude of a unit pattern at the release's PSNR floor)
   give the central difference d_j(x) = (log p(x + a b_j) - log p(x - a b_j)) / 2. For class
   c, D[c, j] is the mean of d_j(x)[c] over the probes of the other classes (the pull towards
   c). Only outputs are used: 2m marked copies per probe, whatever the number of classes.
2. Reference. A clean reference model the data owner trained gives R the same way; the part of
   D along R (what every model trained on such images does) is removed: D' = D - beta R with
   beta = <D, R> / <R, R>, fitted without the key.
3. Whitening. Much of a suspect's pull lies along a few basis directions for every class (the
   model became sensitive to those frequencies), which drowns the key's part. With
   S0 = D'^T D' / C and Sigma = S0 + lambda (tr S0 / m) I (lambda = ``whiten``, default 0.3),
   the rows become D'' = D' Sigma^(-1/2). Sigma is computed from D' alone: key-independent.
4. Statistic. S = sum_c cos(D''_c, u_c), the sum over classes of the cosine between the
   suspect's (whitened) pull towards c and the class's secret direction.
5. Null. Under H0 the suspect, the reference and the probes are independent of the key, and
   the u_c are i.i.d. uniform on the sphere of R^m (i.i.d. Gaussian carriers from os.urandom).
   Given D'' (a function of the models and probes only), each cosine is then distributed as one
   coordinate of a uniform direction: (t + 1) / 2 ~ Beta((m - 1) / 2, (m - 1) / 2),
   independently over classes. The law of S is known exactly, whatever the model: computed on
   a lattice of cells of width h, every cosine rounded to its cell's centre, so
   P(S >= s) <= P(S_lattice >= s - C h / 2). The p-value is that bound: conservative by at most
   the lattice shift, no extrapolated tail, no control carriers. A class whose D''_c is zero
   (a model with no response at all) is left out.

Measured on the probe harness's cached models (bench/scratch/2026-12-06/README.md: 10% of each
class marked at 40 dB, eight key draws and selections): without whitening, mean log10 p -7.46
against -6.82 for the control-carrier permutation test of :mod:`radcore.blackbox` on the same
models. Whitening with lambda 0.3 then added 1.0 to log10 p on average over six of them (-0.1
to +1.9).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from scipy import stats

from radcore.blackbox import BlackboxDetection
from radcore.carriers import Carriers, safetensors_metadata
from radcore.patterns import pattern_amplitude, pattern_basis, pattern_coefficients

__all__ = [
    "ResponseProbes",
    "cosine_sum_log10_sf",
    "is_response_probes",
    "make_response_probes",
    "response_null",
    "response_test",
    "sensitivity",
]

_FORMAT = "radtrace-response-probes/1"
_CELL = 1e-3  # lattice cell width of one cosine, for C <= 10 classes (wider beyond: see _lattice)


@dataclass(frozen=True, eq=False)
class ResponseProbes:
    """Clean probes and what the response test needs of the key.

    images: n×C×H×W uint8; labels: n; coefficients: float64, one unit row of m pattern
    coefficients per class of the release (private: they are the pattern part of the key);
    psnr_floor: the probe amplitude (the release's floor); pattern_freqs: K of
    :mod:`radcore.patterns`; carrier_fingerprint: SHA-256 of the release's carriers.
    """

    images: torch.Tensor
    labels: torch.Tensor
    coefficients: torch.Tensor
    psnr_floor: float
    pattern_freqs: int
    carrier_fingerprint: str = ""

    @property
    def pool_size(self) -> int:
        """Carriers the probes need: the true ones only."""
        return int(self.coefficients.shape[0])

    @property
    def pool_fingerprint(self) -> str:
        """The probes' carriers are the release's own: their fingerprint."""
        return self.carrier_fingerprint

    def to_bytes(self) -> bytes:
        """safetensors bytes. Private, like the carriers."""
        tensors = {
            "images": self.images.contiguous(),
            "labels": self.labels.to(torch.int64).contiguous(),
            "coefficients": self.coefficients.to(torch.float64).contiguous(),
        }
        meta = {
            "format": _FORMAT,
            "psnr_floor": repr(float(self.psnr_floor)),
            "pattern_freqs": str(int(self.pattern_freqs)),
            "carrier_fingerprint": self.carrier_fingerprint,
        }
        return st_save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> ResponseProbes:
        meta = safetensors_metadata(data)
        if meta.get("format") != _FORMAT:
            raise ValueError(f"not a radtrace response probe set (format {meta.get('format')!r})")
        t = st_load(data)
        return cls(
            t["images"],
            t["labels"],
            t["coefficients"],
            float(meta["psnr_floor"]),
            int(meta["pattern_freqs"]),
            meta.get("carrier_fingerprint", ""),
        )


def is_response_probes(data: bytes) -> bool:
    """Whether safetensors bytes hold a :class:`ResponseProbes` (else a pool probe set)."""
    return safetensors_metadata(data).get("format") == _FORMAT


def make_response_probes(
    images: torch.Tensor,
    labels: torch.Tensor,
    carriers: Carriers,
    psnr_floor: float,
    pattern_freqs: int = 6,
) -> ResponseProbes:
    """The probe set of a pattern release: held-out images (n×C×H×W uint8) and the key's
    pattern coefficients."""
    h, w = images.shape[-2:]
    pattern_basis(h, w, pattern_freqs)  # refuses images too small for K
    return ResponseProbes(
        images.cpu(),
        labels.cpu(),
        pattern_coefficients(carriers.vectors, pattern_freqs),
        float(psnr_floor),
        int(pattern_freqs),
        carriers.fingerprint,
    )


def _store(x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    return torch.round((x + step).clamp(0, 1) * 255).to(torch.uint8)


@torch.no_grad()
def sensitivity(
    logprob_fn: Callable[[torch.Tensor], torch.Tensor],
    probes: ResponseProbes,
    num_classes: int | None = None,
    on_basis: Callable[[int], None] | None = None,
) -> np.ndarray:
    """D (C×m, float64) of step 1 of the module docstring for a model given as ``logprob_fn``
    (uint8 N×C×H×W -> N×K log-probabilities). on_basis(1) after each basis image (progress)."""
    x = probes.images.to(torch.float64) / 255.0
    h, w = x.shape[-2:]
    basis = pattern_basis(h, w, probes.pattern_freqs)
    amp = pattern_amplitude(h, w, probes.psnr_floor)
    y = probes.labels.to(torch.long)
    c = num_classes if num_classes is not None else probes.pool_size
    other = (torch.nn.functional.one_hot(y, c) == 0).to(torch.float64)  # n×C
    count = other.sum(0)
    if bool((count == 0).any()):
        raise ValueError("every class needs probes of other classes: use probes of >= 2 classes")
    rows = []
    for b in basis:
        step = (amp * b).expand_as(x)
        up = logprob_fn(_store(x, step)).to(torch.float64)
        down = logprob_fn(_store(x, -step)).to(torch.float64)
        if up.shape[1] != c:
            raise ValueError(
                f"the model has {up.shape[1]} outputs but the release has {c} classes: audit it "
                "against a release of the classes it predicts"
            )
        rows.append((((up - down) / 2) * other).sum(0) / count)  # C
        if on_basis is not None:
            on_basis(1)
    return torch.stack(rows, 1).numpy()  # C×m


@lru_cache(maxsize=16)
def _lattice(num_classes: int, m: int) -> tuple[float, np.ndarray]:
    """(h, tail) for the sum of C i.i.d. cosines in R^m: tail[i] = P(S_lattice >= lo + i h)
    with lo = -C + C h / 2, the lattice's lowest point."""
    h = _CELL * max(1.0, num_classes / 10)  # keeps the convolutions' cost flat in C
    edges = np.linspace(-1.0, 1.0, int(round(2 / h)) + 1)
    law = stats.beta((m - 1) / 2, (m - 1) / 2)
    u = (edges + 1) / 2
    cdf, sf = law.cdf(u), law.sf(u)
    # Cell masses from whichever tail is small, so that far cells keep their relative precision.
    mass = np.where(edges[:-1] >= 0, sf[:-1] - sf[1:], cdf[1:] - cdf[:-1])
    total = mass
    for _ in range(num_classes - 1):
        total = np.convolve(total, mass)
    return h, np.cumsum(total[::-1])[::-1]


def cosine_sum_log10_sf(s: float, num_classes: int, m: int) -> float:
    """log10 of the conservative bound on P(S >= s) (step 5 of the module docstring) for the sum
    S of ``num_classes`` i.i.d. cosines between a fixed vector and a uniform direction in R^m."""
    if num_classes < 1 or m < 2:
        raise ValueError(f"need >= 1 class and m >= 2, got {num_classes} and {m}")
    h, tail = _lattice(num_classes, m)
    lo = -num_classes + num_classes * h / 2
    i = math.ceil((s - num_classes * h / 2 - lo) / h - 1e-9)  # first lattice point >= s - C h/2
    if i <= 0:
        return 0.0
    if i >= len(tail):
        return -math.inf
    return float(np.log10(tail[i]))


WHITEN = 0.3  # lambda of step 3


def _prepare(suspect: np.ndarray, reference: np.ndarray | None, whiten: float | None) -> np.ndarray:
    """D'' of steps 2-3 (None: no whitening)."""
    d = np.asarray(suspect, dtype=np.float64)
    if reference is not None:
        r = np.asarray(reference, dtype=np.float64)
        rr = float((r * r).sum())
        if rr > 0:
            d = d - (float((d * r).sum()) / rr) * r
    if whiten is None:
        return d
    if whiten <= 0:
        raise ValueError(f"whiten must be > 0 (or None for no whitening), got {whiten}")
    cov = d.T @ d / d.shape[0]
    scale = float(np.trace(cov)) / d.shape[1]
    if scale == 0:
        return d
    values, vectors = np.linalg.eigh(cov + whiten * scale * np.eye(d.shape[1]))
    return d @ (vectors / np.sqrt(values)) @ vectors.T


def _score(d: np.ndarray, coefficients: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(per-class cosines of D'' with the coefficients, classes with D''_c != 0, log10 p)."""
    norm = np.linalg.norm(d, axis=1)
    live = norm > 0
    cos = np.zeros(len(d))
    cos[live] = (d[live] * coefficients[live]).sum(1) / norm[live]
    k = int(live.sum())
    log10_p = cosine_sum_log10_sf(float(cos[live].sum()), k, d.shape[1]) if k else 0.0
    return cos, k, log10_p


def response_test(
    suspect: np.ndarray,
    coefficients: np.ndarray | torch.Tensor,
    reference: np.ndarray | None = None,
    whiten: float | None = WHITEN,
    null_samples: int = 5000,
    generator: np.random.Generator | None = None,
) -> BlackboxDetection:
    """The test of the module docstring on sensitivity matrices (:func:`sensitivity`).

    suspect / reference: C×m; coefficients: C×m unit rows (the key's); whiten: lambda of step 3
    (None: none). In the result, z is
    S / sqrt(C / m) (S standardised: the null has mean 0 and sd 1), z_per_class the cosines times
    sqrt(m), and null_z a sample of the standardised null (for plots; it plays no part in p).
    """
    u = np.asarray(coefficients, dtype=np.float64)
    d = _prepare(suspect, reference, whiten)
    if d.shape != u.shape:
        raise ValueError(f"sensitivity {d.shape} and coefficients {u.shape} differ in shape")
    c, m = u.shape
    cos, k, log10_p = _score(d, u)
    s = float(cos.sum())  # dead classes hold 0
    rng = generator if generator is not None else np.random.default_rng(0)
    t = 2 * rng.beta((m - 1) / 2, (m - 1) / 2, size=(null_samples, max(k, 1))) - 1
    scale = math.sqrt(max(k, 1) / m)
    return BlackboxDetection(
        log10_p=log10_p,
        log10_p_permutation=log10_p,
        tail="exact",
        z=s / scale,
        z_per_class=tuple(float(v) * math.sqrt(m) for v in cos),
        null_mean=0.0,
        null_sd=1.0,
        null_z=tuple(float(v) for v in t.sum(1) / scale),
        permutations=0,
        num_probes=0,
        num_carriers=c,
        statistic="response",
    )


def response_null(
    suspect: np.ndarray,
    reference: np.ndarray | None,
    trials: int,
    draw: Callable[[], np.ndarray],
    whiten: float | None = WHITEN,
) -> np.ndarray:
    """Null audits: ``trials`` log10 p of the test with coefficient sets from ``draw()`` (C×m unit
    rows of fresh carriers, which the model cannot have seen)."""
    d = _prepare(suspect, reference, whiten)
    return np.array([_score(d, np.asarray(draw(), dtype=np.float64))[2] for _ in range(trials)])
