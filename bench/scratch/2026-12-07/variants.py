"""Variants of the response statistic on tex.py's cached suspects (tags on the command line, each
with its key seed as _s<n>), all scored with the exact null of radcore.response: 'now' (the product:
other-class probes, log p, reference removed with a fitted beta, whitened at 0.3), 'centred'
(log p minus its mean over classes: logits up to a constant), 'allprobes' (every probe, its own
class included), 'nowhite'."""
import math, re, sys
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.patterns import pattern_basis, pattern_frequencies
from radcore.response import cosine_sum_log10_sf
from radcore.train import log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
import os; PP = float(os.environ.get("PROBE_PSNR", 40))  # probe amplitude (dB of one basis image)
xte, yte = load_fashion_mnist("test")
basis = pattern_basis(28, 28, 6); m = basis.shape[0]; fr = pattern_frequencies(6)
pidx = torch.cat([(yte[:3000] == c).nonzero().flatten()[:50] for c in range(10)])
px, py = xte[pidx], yte[pidx]
def key(seed):
    co = torch.randn(100, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    V = torch.stack([co[:, a, b] for a, b in fr], 1)[:10]
    return (V / V.norm(dim=1, keepdim=True)).numpy()
def resp(model):
    a = math.sqrt(784 * 10 ** (-PP / 10)) * 255; x = px.float(); out = []
    for j in range(m):
        plus = (x + a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        minus = (x - a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        out.append((log_probabilities(model, plus, M, S) - log_probabilities(model, minus, M, S)) / 2)
    return torch.stack(out).double()  # m×n×C
other = (torch.nn.functional.one_hot(py, 10) == 0).double()
def Dof(r, mode):
    if mode == "centred": r = r - r.mean(2, keepdim=True)
    w = torch.ones_like(other) if mode == "allprobes" else other
    return (torch.einsum("jnc,nc->cj", r, w) / w.sum(0)[:, None]).numpy()
def score(D, R, V, white=True):
    DD = D - float((D * R).sum() / (R * R).sum()) * R
    if white:
        cov = DD.T @ DD / 10; cov = cov + 0.3 * np.trace(cov) / m * np.eye(m)
        ev, evec = np.linalg.eigh(cov); DD = DD @ evec @ np.diag(ev ** -0.5) @ evec.T
    cs = (DD * V).sum(1) / np.linalg.norm(DD, axis=1)
    return cosine_sum_log10_sf(float(cs.sum()), 10, m)
rr = resp(torch.load("/tmp/dev/ref_vgg_A.pt", weights_only=False))
rc = resp(torch.load("/tmp/dev/ctl_vgg.pt", weights_only=False))
modes = ("now", "nowhite", "centred", "allprobes")
tot = {k: [] for k in modes}; totc = {k: [] for k in modes}
for tag in sys.argv[1:]:
    V = key(int(re.search(r"_s(\d+)", tag).group(1))); rs = resp(torch.load(f"/tmp/dev/{tag}.pt", weights_only=False)); row = []
    for mode in modes:
        dm = "now" if mode == "nowhite" else mode
        s = score(Dof(rs, dm), Dof(rr, dm), V, mode != "nowhite"); c = score(Dof(rc, dm), Dof(rr, dm), V, mode != "nowhite")
        tot[mode].append(s); totc[mode].append(c); row.append(f"{mode} {s:.2f}/{c:.2f}")
    print(tag[:26], tag[-5:], " | ".join(row), flush=True)
print("means suspect", {k: round(float(np.mean(v)), 2) for k, v in tot.items()}, "control", {k: round(float(np.mean(v)), 2) for k, v in totc.items()})
