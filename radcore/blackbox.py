"""Black-box detection: only the suspect's outputs on marked probe images are needed.

Not in the paper's code; designed and measured for radtrace (DESIGN.md section 2).

Set-up. A pool of N carriers: the release's C true carriers plus N - C control carriers drawn
afresh. Every one of n held-out probe images (never seen by the marker, never released) is
marked with every carrier of the pool, by the same procedure as the release. The suspect's
log-probabilities on the clean probes and on each marked copy give, for class j and carrier w,

- ``own``:   S[j, w] = mean over class-j probes of  Δ log p_j   (their own class),
- ``cross``: S[j, w] = mean over probes of other classes of  Δ log p_j   (pulled towards j),

where Δ is marked minus clean. A model trained on data marked with u_j has learnt that the
carrier's pattern means class j, so S[j, u_j] stands out from S[j, v] for control carriers v.

Why the carrier, not the image, is the unit. A random carrier moves class j by a few tenths of a
nat on every model, clean ones included; averaging over many probes does not remove that, so a
per-image test (e.g. a paired t-test of true vs control copies) is anti-conservative
(DESIGN.md: a clean model reached log10 p = -2.7). Here the carriers are the units:

1. Per class j, regress S[j, ·] across the N pool carriers on covariates that are the same for
   every carrier role: the same statistic of a clean reference model the data owner trained
   (it removes the part of a carrier's effect that every model shares) and the suspect's own
   shift on the other classes' probes (how disruptive the carrier is for this suspect).
   Standardise the residuals: z[j, w].
2. Combine classes by Stouffer: Z = sum_j z[j, a_j] / sqrt(C) for the assignment a_j = u_j.
3. p-value by permuting carrier roles: under H0 the suspect and the reference never saw any
   carrier of the pool, all N carriers are i.i.d. uniform directions and the marking is the same
   for each, so the joint law of the data is invariant under relabelling the pool and the rank
   of the true assignment among random injective assignments is uniform. The fit in step 1 is
   symmetric in the carriers, so p = (1 + #{Z_perm >= Z}) / (1 + B) is exact (conservative by
   at most 1/(1 + B)). Beyond the resolution of B permutations (fewer than
   ``min_exceedances`` exceedances) the tail is extrapolated with a normal fitted to the
   permutation distribution, reported as such (``tail="normal"``) beside the exact bound.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import special

from radcore.stats import log10

__all__ = [
    "BlackboxConfig",
    "BlackboxDetection",
    "Statistic",
    "blackbox_from_logprobs",
    "blackbox_test",
    "paired_ttest_log10_p",
    "response_matrices",
    "rotation_null",
]

Statistic = Literal["own", "cross"]


@dataclass(frozen=True)
class BlackboxConfig:
    """statistic: which response is scored (module docstring). permutations: B.
    use_reference / use_own_shift: the regression covariates of step 1."""

    statistic: Statistic = "cross"
    permutations: int = 200_000
    min_exceedances: int = 10
    use_reference: bool = True
    use_own_shift: bool = True

    def __post_init__(self) -> None:
        if self.statistic not in ("own", "cross"):
            raise ValueError(f"statistic must be 'own' or 'cross', got {self.statistic!r}")
        if self.permutations < 100:
            raise ValueError(f"permutations must be >= 100, got {self.permutations}")


@dataclass(frozen=True)
class BlackboxDetection:
    """Result of the black-box test.

    log10_p: the reported log10 p (permutation, or its normal extrapolation: see ``tail``).
    log10_p_permutation: log10 (1 + exceedances) / (1 + B), exact and conservative.
    z: the Stouffer statistic of the true assignment; z_per_class: C residual z-scores.
    null_z: a sample of the permutation distribution of Z (for plots).
    """

    log10_p: float
    log10_p_permutation: float
    tail: str
    z: float
    z_per_class: tuple[float, ...]
    null_mean: float
    null_sd: float
    null_z: tuple[float, ...]
    permutations: int
    num_probes: int
    num_carriers: int
    statistic: str


def response_matrices(
    logp_clean: torch.Tensor, logp_marked: torch.Tensor, labels: torch.Tensor
) -> dict[str, np.ndarray]:
    """Per-class, per-carrier responses of one model.

    logp_clean: n×C log-probabilities on the clean probes; logp_marked: N×n×C on the copies
    marked with each pool carrier; labels: n class indices. Returns C×N float64 arrays
    ``own``, ``cross`` (module docstring) and ``own_shift`` (mean over probes of the other
    classes of Δ log p of their own class).
    """
    if logp_marked.ndim != 3 or logp_marked.shape[1:] != logp_clean.shape:
        raise ValueError(
            f"logp_marked must be N×n×C with n×C = {tuple(logp_clean.shape)}, "
            f"got {tuple(logp_marked.shape)}"
        )
    delta = (logp_marked - logp_clean.unsqueeze(0)).double()  # N×n×C
    n, c = logp_clean.shape
    y = labels.to(torch.long).cpu()
    onehot = torch.nn.functional.one_hot(y, c).double()  # n×C
    count_own = onehot.sum(0)  # C
    if bool((count_own == 0).any()):
        missing = (count_own == 0).nonzero().flatten().tolist()
        raise ValueError(f"no probe image of classes {missing}: probes must cover every class")
    count_other = n - count_own
    own = torch.einsum("wnc,nc->cw", delta, onehot) / count_own[:, None]
    total = delta.sum(1).T  # C×N: sum over all probes of Δ log p_j
    cross = (total - own * count_own[:, None]) / count_other[:, None]
    own_delta = (delta * onehot.unsqueeze(0)).sum(2)  # N×n: Δ log p of each probe's own class
    sum_all = own_delta.sum(1)  # N
    own_sum = own * count_own[:, None]  # C×N
    own_shift = (sum_all[None, :] - own_sum) / count_other[:, None]
    return {"own": own.numpy(), "cross": cross.numpy(), "own_shift": own_shift.numpy()}


def _residual_z(y: np.ndarray, covariates: list[np.ndarray]) -> np.ndarray:
    """Standardised OLS residuals of y (N) on an intercept plus covariates (each N)."""
    x = np.column_stack([np.ones_like(y), *covariates])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ beta
    dof = max(len(y) - x.shape[1], 1)
    sd = math.sqrt(float(r @ r) / dof)
    return r / sd if sd > 0 else np.zeros_like(r)


def _permutation_null(z: np.ndarray, permutations: int, generator: torch.Generator) -> np.ndarray:
    """Z for B random injective assignments of pool carriers to classes. z: C×N."""
    c, n = z.shape
    zt = torch.from_numpy(z)
    out, chunk = [], 20_000
    for start in range(0, permutations, chunk):
        b = min(chunk, permutations - start)
        pick = torch.rand(b, n, generator=generator, dtype=torch.float32).argsort(1)[:, :c]
        out.append(zt.gather(1, pick.T.contiguous()).sum(0) / math.sqrt(c))  # b
    return torch.cat(out).numpy()


def blackbox_test(
    suspect: dict[str, np.ndarray],
    true_index: np.ndarray | list[int],
    reference: dict[str, np.ndarray] | None = None,
    cfg: BlackboxConfig = BlackboxConfig(),
    generator: torch.Generator | None = None,
) -> BlackboxDetection:
    """The test on response matrices (:func:`response_matrices`).

    suspect / reference: the dicts of C×N arrays of the suspect and of a clean reference model
    (None: no reference covariate). true_index: C ints, the pool column of each class's true
    carrier (distinct). generator: for the permutations (a fixed seed is fine: the carriers,
    not this draw, are the randomness of the test).
    """
    s = np.asarray(suspect[cfg.statistic], dtype=np.float64)
    c, n = s.shape
    true_index = np.asarray(true_index, dtype=np.int64)
    if true_index.shape != (c,) or len(set(true_index.tolist())) != c:
        raise ValueError(f"true_index must hold {c} distinct pool columns, got {true_index}")
    if n < c + 5:
        raise ValueError(f"the pool has {n} carriers for {c} classes: draw at least 5 controls")
    z = np.empty_like(s)
    for j in range(c):
        covariates = []
        if cfg.use_reference and reference is not None:
            covariates.append(np.asarray(reference[cfg.statistic][j], dtype=np.float64))
        if cfg.use_own_shift:
            covariates.append(np.asarray(suspect["own_shift"][j], dtype=np.float64))
        z[j] = _residual_z(s[j], covariates)
    z_true = z[np.arange(c), true_index]
    z_obs = float(z_true.sum() / math.sqrt(c))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    null = _permutation_null(z, cfg.permutations, gen)
    exceed = int((null >= z_obs - 1e-12).sum())
    b = cfg.permutations
    log_p_perm = math.log((1 + exceed) / (1 + b))
    mu, sd = float(null.mean()), float(null.std(ddof=1))
    if exceed >= cfg.min_exceedances or sd == 0:
        log_p, tail = log_p_perm, "permutation"
    else:
        # ln of the normal upper tail, finite far below 1e-300 (log_ndtr of the negated z).
        log_p = min(log_p_perm, float(special.log_ndtr(-(z_obs - mu) / sd)))
        tail = "normal"
    keep = null[: min(len(null), 5000)]
    return BlackboxDetection(
        log10_p=float(log10(log_p)),
        log10_p_permutation=float(log10(log_p_perm)),
        tail=tail,
        z=z_obs,
        z_per_class=tuple(float(v) for v in z_true),
        null_mean=mu,
        null_sd=sd,
        null_z=tuple(float(v) for v in keep),
        permutations=b,
        num_probes=0,  # unknown from response matrices; blackbox_from_logprobs fills it in
        num_carriers=n,
        statistic=cfg.statistic,
    )


def blackbox_from_logprobs(
    suspect_clean: torch.Tensor,
    suspect_marked: torch.Tensor,
    labels: torch.Tensor,
    true_index: np.ndarray | list[int],
    reference_clean: torch.Tensor | None = None,
    reference_marked: torch.Tensor | None = None,
    cfg: BlackboxConfig = BlackboxConfig(),
    generator: torch.Generator | None = None,
) -> BlackboxDetection:
    """:func:`response_matrices` of suspect (and reference), then :func:`blackbox_test`.

    *_clean: n×C log-probabilities; *_marked: N×n×C (pool order); labels: n.
    """
    sus = response_matrices(suspect_clean, suspect_marked, labels)
    ref = None
    if reference_clean is not None and reference_marked is not None:
        ref = response_matrices(reference_clean, reference_marked, labels)
    det = blackbox_test(sus, true_index, ref, cfg, generator)
    return dataclasses.replace(det, num_probes=int(labels.shape[0]))


def paired_ttest_log10_p(
    suspect_clean: torch.Tensor,
    suspect_marked: torch.Tensor,
    labels: torch.Tensor,
    true_index: np.ndarray | list[int],
) -> float:
    """The naive per-image test radtrace does NOT use, kept to show that it is invalid.

    For every probe: own-class log-probability on its true-carrier copy minus the mean over
    the control copies (pool columns that are no class's true carrier); one-sided t-test over
    probes. It treats images as the units, ignoring that every probe of a class shares one
    carrier, so it rejects far too often under H0 (see the calibration tests).
    """
    from scipy import stats

    n, c = suspect_clean.shape
    y = labels.to(torch.long).cpu()
    true_index = np.asarray(true_index)
    controls = np.setdiff1d(np.arange(suspect_marked.shape[0]), true_index)
    own = suspect_marked[:, torch.arange(n), y].double()  # N×n, own-class log p of each copy
    true_col = torch.from_numpy(true_index)[y]  # n: the true carrier of each probe's class
    diff = own[true_col, torch.arange(n)] - own[torch.from_numpy(controls)].mean(0)
    t = stats.ttest_1samp(diff.numpy(), 0.0, alternative="greater")
    return float(np.log10(max(t.pvalue, 1e-300)))


def rotation_null(
    suspect: dict[str, np.ndarray],
    reference: dict[str, np.ndarray] | None,
    trials: int,
    columns: np.ndarray | None = None,
    cfg: BlackboxConfig = BlackboxConfig(permutations=2000),
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Null audits by rotation: in each trial C random pool carriers the model never saw play
    the "true" role and the rest of ``columns`` the controls. Returns ``trials`` log10 p.

    columns: the pool columns to use (default all); leave out carriers the model did see
    (a marked suspect's true carriers) so that every trial is a genuine H0.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n_pool = np.asarray(suspect["own"]).shape[1]
    cols = np.arange(n_pool) if columns is None else np.asarray(columns)

    def sub(m: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v)[:, cols] for k, v in m.items()}

    sus, ref = sub(suspect), sub(reference) if reference is not None else None
    c = sus["own"].shape[0]
    out = np.empty(trials)
    for t in range(trials):
        true_index = torch.randperm(len(cols), generator=gen)[:c].numpy()
        out[t] = blackbox_test(sus, true_index, ref, cfg, gen).log10_p
    return out
