"""Probe: a linear-response black-box statistic for pattern marks, on tex.py's cached models.

The suspect's response to each of the m=17 pattern basis images (central difference of log p at
probe amplitude PROBE_PSNR, clipped and rounded like a stored image) gives a C×m sensitivity
matrix D (class c's log p against basis j, averaged over probes of other classes). The score of a
key is sum_c <D_c, u_c>; under H0 the true u_c are uniform on S^16 and independent of D, so the
null law of the score is known exactly (weighted sum of Beta marginals): no control sets needed.
TAG: the cached suspect (tex.py's tag), SEED: its key draw. PER: probes per class.
"""
import math, os, time
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.patterns import _dct_rows, pattern_frequencies
from radcore.train import log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
SEED = int(os.environ.get("SEED", 7)); TAG = os.environ["TAG"]; PER = int(os.environ.get("PER", 50))
PP = [float(v) for v in os.environ.get("PROBE_PSNR", "40").split(",")]
xte, yte = load_fashion_mnist("test")
# tex.py's lowfreq patterns for this seed (N = 100, true = columns 0..9)
g = torch.Generator().manual_seed(SEED); N = 100; K = int(os.environ.get("K", 6))
k = torch.arange(K).double(); t = torch.arange(28).double()
b1 = torch.cos(math.pi * (t[None, :] + 0.5) * k[:, None] / 28); b1 = b1 / b1.norm(dim=1, keepdim=True)
co = torch.randn(N, K, K, generator=g, dtype=torch.float64); co[:, 0, 0] = 0
pats = torch.stack([(lambda p: (p + p.flip(1)) / 2)(torch.einsum("ab,ai,bj->ij", c, b1, b1)) for c in co])
pats = pats / pats.flatten(1).norm(dim=1)[:, None, None]
fr = pattern_frequencies(K); ry = _dct_rows(28, K)[[a for a, _ in fr]]; rx = _dct_rows(28, K)[[b for _, b in fr]]
basis = torch.einsum("ih,iw->ihw", ry, rx)  # m×28×28 orthonormal
m = basis.shape[0]
U = torch.einsum("nhw,ihw->ni", pats, basis)  # N×m coefficients
log("pattern energy in basis", float(U.norm(dim=1).min()), float(U.norm(dim=1).max()))
U = (U / U.norm(dim=1, keepdim=True)).numpy()
sus = torch.load(f"/tmp/dev/{TAG}.pt", weights_only=False)
ctl = torch.load("/tmp/dev/ctl_vgg.pt", weights_only=False)
ref = torch.load("/tmp/dev/ref_vgg_A.pt", weights_only=False)
pidx = torch.cat([(yte[:3000] == c).nonzero().flatten()[:PER] for c in range(10)])
px, py = xte[pidx], yte[pidx]
def sens(model, psnr):
    a = math.sqrt(784 * 10 ** (-psnr / 10)) * 255
    x = px.float()
    lp0 = log_probabilities(model, px, M, S)  # n×C
    out = []
    for j in range(m):
        plus = (x + a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        minus = (x - a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        out.append((log_probabilities(model, plus, M, S) - log_probabilities(model, minus, M, S)) / 2)
    r = torch.stack(out).double()  # m×n×C
    other = torch.nn.functional.one_hot(py, 10).double() == 0  # n×C
    D = torch.einsum("jnc,nc->cj", r, other.double()) / other.sum(0)[:, None]
    if os.environ.get("MARGIN"):  # class c's log p minus the probe's own class's: logit_c - logit_y
        own = r[:, torch.arange(len(py)), py]  # m×n
        E = torch.einsum("jn,nc->cj", own, other.double()) / other.sum(0)[:, None]
        D = D - float(os.environ["MARGIN"]) * E
    return D.numpy()
def score(D, Uc):  # linear: z of sum_c <D_c,u_c> ; cos: sum of cosines / sqrt(C/m)
    lin = float((D * Uc).sum()) / math.sqrt(float((D**2).sum()) / m)
    cs = (D * Uc).sum(1) / np.linalg.norm(D, axis=1)
    return lin, float(cs.sum() / math.sqrt(10 / m))
rng = np.random.default_rng(0)
for psnr in PP:
    Ds = {nm: sens(mod, psnr) for nm, mod in (("sus", sus), ("ctl", ctl), ("ref", ref))}
    for nm in ("sus", "ctl"):
        D = Ds[nm]; R = Ds["ref"]
        beta = float((D * R).sum() / (R * R).sum())
        for lab, DD in (("raw", D), ("-ref", D - R), ("-bref", D - beta * R)):
            lin, cs = score(DD, U[:10])
            # the same scores for 90 control keys from the pool (random 10-subsets): their sd
            ctlz = np.array([score(DD, U[rng.choice(np.arange(10, N), 10, replace=False)]) for _ in range(300)])
            log(f"probe {psnr} {nm} {lab}: lin z {lin:.2f} cos z {cs:.2f} | ctl-key mean/sd lin {ctlz[:,0].mean():.2f}/{ctlz[:,0].std():.2f} cos {ctlz[:,1].mean():.2f}/{ctlz[:,1].std():.2f} beta {beta:.2f}")
        per = (Ds[nm] - Ds["ref"]) * U[:10]
        log(f"  {nm} per-class cos(-ref): " + " ".join(f"{v:.2f}" for v in per.sum(1) / np.linalg.norm(Ds[nm] - Ds['ref'], axis=1)))
if os.environ.get("DIAG"):
    D, R, C0 = Ds["sus"], Ds["ref"], Ds["ctl"]; Ut = U[:10]
    cosv = lambda a, b: float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    alpha = (D * Ut).sum(1, keepdims=True)
    res = D - alpha * Ut
    log("norms |D| per class", np.linalg.norm(D, axis=1).round(3), "|R|", np.linalg.norm(R, axis=1).round(3), "|ctl|", np.linalg.norm(C0, axis=1).round(3))
    log("signal share", float((alpha**2).sum() / (D**2).sum()))
    log("cos(res, R)", cosv(res, R), "cos(res, ctl)", cosv(res, C0), "cos(ctl, R)", cosv(C0, R))
    A, *_ = np.linalg.lstsq(Ut.T, D.T, rcond=None)  # D^T ≈ Ut^T A  (17×10)
    fit = (Ut.T @ A).T
    log("fit D ≈ A U: R2", 1 - float(((D - fit) ** 2).sum() / (D**2).sum()), "diag mean", float(np.diag(A).mean()), "offdiag mean", float((A.sum() - np.trace(A)) / 90))
    # signed response asymmetry: + vs - separately
if os.environ.get("DIAG"):
    def stats_of(D, Ub):  # Ub: B×10×17
        lin = np.einsum("cj,bcj->b", D, Ub)
        G = np.einsum("bcj,bdj->bcd", Ub, Ub)
        Ah = np.einsum("cj,bdj->bcd", D, Ub) @ np.linalg.inv(G)  # B×10×10: D U^T (U U^T)^-1
        dual = np.einsum("bcc->b", Ah)
        dualn = np.einsum("bcc->bc", Ah) / np.linalg.norm(D, axis=1)[None]
        return np.stack([lin, dual, dualn.sum(1)], 1)
    rs = np.random.default_rng(1)
    Ur = rs.standard_normal((20000, 10, m)); Ur /= np.linalg.norm(Ur, axis=2, keepdims=True)
    for nm in ("sus", "ctl"):
        for lab, DD in (("raw", Ds[nm]), ("-ref", Ds[nm] - Ds["ref"])):
            null = stats_of(DD, Ur); obs = stats_of(DD, U[None, :10])[0]
            z = (obs - null.mean(0)) / null.std(0)
            log(f"{nm} {lab}: z lin {z[0]:.2f} dual {z[1]:.2f} dual/|D| {z[2]:.2f}; null exceed (of 20000) {[(null[:, i] >= obs[i]).sum() for i in range(3)]}")
from scipy import stats as st
def cos_null_sf(m=17, C=10, h=1e-3):
    """Lattice law of the sum of C iid cosines of a uniform direction in R^m (cells of width h
    rounded to their centres); returns (grid, sf) with sf[i] = P(sum >= grid[i] - C h / 2)."""
    edges = np.arange(-1, 1 + h / 2, h)
    b = st.beta((m - 1) / 2, (m - 1) / 2)
    cdf = b.cdf((edges + 1) / 2); sf = b.sf((edges + 1) / 2)
    mass = np.where(edges[:-1] >= 0, sf[:-1] - sf[1:], cdf[1:] - cdf[:-1])
    law = mass.copy()
    for _ in range(C - 1): law = np.convolve(law, mass)
    centres = -C + C * h / 2 + h * np.arange(len(law))  # each cell at its centre: sum of centres
    tail = np.cumsum(law[::-1])[::-1]
    return centres, tail
GRID, TAIL = cos_null_sf(m=m)
def exact_log10_p(s):  # P(S >= s) <= P(S_lattice >= s - C h/2)
    i = np.searchsorted(GRID, s - 10 * 1e-3 / 2, side="left")
    return float(np.log10(TAIL[min(i, len(TAIL) - 1)])) if i < len(TAIL) else -np.inf
if os.environ.get("DIAG"):
    for nm in ("sus", "ctl"):
        D, R = Ds[nm], Ds["ref"]; beta = float((D * R).sum() / (R * R).sum())
        for lab, DD in (("raw", D), ("-ref", D - R), ("-bref", D - beta * R)):
            s = float(((DD * U[:10]).sum(1) / np.linalg.norm(DD, axis=1)).sum())
            zz = s / math.sqrt(10 / m)
            log(f"EXACT {nm} {lab}: cos-sum {s:.3f} z {zz:.2f} exact log10 p {exact_log10_p(s):.2f} normal {st.norm.logsf(zz)/math.log(10):.2f}")
if os.environ.get("WHITEN"):
    for nm in ("sus", "ctl"):
        D, R = Ds[nm], Ds["ref"]; beta = float((D * R).sum() / (R * R).sum()); DD = D - beta * R
        out = []
        for lam in (0.03, 0.1, 0.3, 1.0, 3.0):
            cov = DD.T @ DD / 10; cov = cov + lam * np.trace(cov) / m * np.eye(m)
            ev, evec = np.linalg.eigh(cov)
            for lab, W in (("inv", evec @ np.diag(1 / ev) @ evec.T), ("isqrt", evec @ np.diag(ev ** -0.5) @ evec.T)):
                X = DD @ W
                s = float(((X * U[:10]).sum(1) / np.linalg.norm(X, axis=1)).sum())
                out.append(f"{lab} lam{lam}: {exact_log10_p(s):.2f}")
        sd = DD.std(0); X = DD / sd
        s = float(((X * U[:10]).sum(1) / np.linalg.norm(X, axis=1)).sum())
        out.append(f"diag: {exact_log10_p(s):.2f}")
        log(f"WHITEN {nm}: " + "; ".join(out))
