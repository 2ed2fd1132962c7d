"""Probe: frequency-weighted pattern rendering. The key direction v_c (uniform on S^16, as now)
is rendered as sum_j w_j v_cj b_j (renormalised), w = per-basis learnability; the response test
still scores cos(D_c, v_c), so its exact null is unchanged (v_c uniform, independent of D).
W: 'gain' (mean gains measured by /tmp/gain.py on tex.py suspects, keys 7-9) or 'flat'.
Same split, selection (band SKIP by the marker), suspect recipe and keys (SEED) as tex.py.
"""
import math, os, time
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.patterns import pattern_basis, add_patterns
from radcore.response import cosine_sum_log10_sf
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
SEED = int(os.environ.get("SEED", 7)); SKIP = float(os.environ.get("SKIP", 0.03)); Q = 0.1
WN = os.environ.get("W", "gain"); PSNR = float(os.environ.get("PSNR", 40))
GAIN = np.array([0.55, 0.6, 3.02, 2.19, 0.6, 1.9, 0.65, 0.46, 1.12, 0.54, 0.14, 1.36, 0.45, 0.14, 0.76, 0.73, 0.25])
WTS = {"gain": GAIN, "flat": np.ones(17), "sqrt": np.sqrt(GAIN)}[WN]
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
A, B = perm[:30000], perm[30000:]
basis = pattern_basis(28, 28, 6); m = basis.shape[0]
from radcore.patterns import pattern_frequencies
fr = pattern_frequencies(6)
g = torch.Generator().manual_seed(SEED)
co = torch.randn(100, 6, 6, generator=g, dtype=torch.float64)  # tex.py's draw: same keys
V = torch.stack([co[:, a, b] for a, b in fr], 1)[:10]; V = V / V.norm(dim=1, keepdim=True)
P = V * torch.tensor(WTS); P = P / P.norm(dim=1, keepdim=True)
pats = torch.einsum("ci,ihw->chw", P, basis)
yb = ytr[B]; xb = xtr[B].clone()
scorer = torch.load("/tmp/radtrace-probe-cache/marker.pt", weights_only=False)
rl = -log_probabilities(scorer, xb, M, S).gather(1, yb[:, None]).squeeze(1)
def band(c):
    n = (yb == c).sum().item(); lo = int(round(SKIP * n)); hi = lo + int(round(Q * n))
    return (yb == c).nonzero().flatten()[rl[yb == c].argsort(descending=True)[lo:hi]]
sel = torch.cat([band(c) for c in range(10)])
xm = add_patterns(xb[sel].double() / 255, pats[yb[sel]], PSNR)
ps = 10 * torch.log10(1 / ((xm.double() - xb[sel].double()) / 255).pow(2).flatten(1).mean(1))
log(f"W={WN} marked {len(sel)} PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
xb[sel] = xm
tag = f"wtex_{WN}_skip{SKIP:g}_p{PSNR:g}_s{SEED}"
path = f"/tmp/dev/{tag}.pt"
if os.path.exists(path): sus = torch.load(path, weights_only=False)
else:
    torch.manual_seed(3); sus = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(sus, xb, yb, M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(3)); torch.save(sus, path)
ctl = torch.load("/tmp/dev/ctl_vgg.pt", weights_only=False); ref = torch.load("/tmp/dev/ref_vgg_A.pt", weights_only=False)
log("acc sus", accuracy(sus, xte[3000:], yte[3000:], M, S), "ctl", accuracy(ctl, xte[3000:], yte[3000:], M, S))
pidx = torch.cat([(yte[:3000] == c).nonzero().flatten()[:50] for c in range(10)])
px, py = xte[pidx], yte[pidx]
def sens(model):
    a = math.sqrt(784 * 10 ** (-40 / 10)) * 255; x = px.float(); out = []
    for j in range(m):
        plus = (x + a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        minus = (x - a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        out.append((log_probabilities(model, plus, M, S) - log_probabilities(model, minus, M, S)) / 2)
    r = torch.stack(out).double(); other = (torch.nn.functional.one_hot(py, 10) == 0).double()
    return (torch.einsum("jnc,nc->cj", r, other) / other.sum(0)[:, None]).numpy()
R = sens(ref); Vn = V.numpy()
for nm, mod in (("suspect", sus), ("control", ctl)):
    D = sens(mod); beta = float((D * R).sum() / (R * R).sum()); DD = D - beta * R
    cov = DD.T @ DD / 10; cov = cov + 0.3 * np.trace(cov) / m * np.eye(m)
    ev, evec = np.linalg.eigh(cov); X = DD @ evec @ np.diag(ev ** -0.5) @ evec.T
    out = []
    for lab, Y in (("raw-bref", DD), ("white", X)):
        cs = (Y * Vn).sum(1) / np.linalg.norm(Y, axis=1)
        out.append(f"{lab} {cosine_sum_log10_sf(float(cs.sum()), 10, m):.2f}")
    gain = (DD * Vn).sum(0) / (Vn * Vn).sum(0)
    log(f"{nm}: " + "; ".join(out) + " per-class cos " + " ".join(f"{v:.2f}" for v in cs))
