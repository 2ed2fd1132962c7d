"""Per-basis gain of tex.py suspects: the pull along the key on each of the 17 basis images
(sum_c D_cj u_cj / sum_c u_cj^2, reference part removed), for the tags given on the command line
(the tag ends in its key seed)."""
import math, os, sys
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.patterns import _dct_rows, pattern_frequencies
from radcore.train import log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
xte, yte = load_fashion_mnist("test")
K = 6; fr = pattern_frequencies(K); ry = _dct_rows(28, K)[[a for a, _ in fr]]; rx = _dct_rows(28, K)[[b for _, b in fr]]
basis = torch.einsum("ih,iw->ihw", ry, rx); m = basis.shape[0]
print("freqs", fr)
pidx = torch.cat([(yte[:3000] == c).nonzero().flatten()[:50] for c in range(10)])
px, py = xte[pidx], yte[pidx]
def pats(seed):
    g = torch.Generator().manual_seed(seed); N = 100
    k = torch.arange(K).double(); t = torch.arange(28).double()
    b1 = torch.cos(math.pi * (t[None, :] + 0.5) * k[:, None] / 28); b1 = b1 / b1.norm(dim=1, keepdim=True)
    co = torch.randn(N, K, K, generator=g, dtype=torch.float64); co[:, 0, 0] = 0
    p = torch.stack([(lambda p: (p + p.flip(1)) / 2)(torch.einsum("ab,ai,bj->ij", c, b1, b1)) for c in co])
    p = p / p.flatten(1).norm(dim=1)[:, None, None]
    U = torch.einsum("nhw,ihw->ni", p, basis)[:10]
    return (U / U.norm(dim=1, keepdim=True)).numpy()
def sens(model, psnr=40):
    a = math.sqrt(784 * 10 ** (-psnr / 10)) * 255; x = px.float(); out = []
    for j in range(m):
        plus = (x + a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        minus = (x - a * basis[j].float()).clamp(0, 255).round().to(torch.uint8)
        out.append((log_probabilities(model, plus, M, S) - log_probabilities(model, minus, M, S)) / 2)
    r = torch.stack(out).double(); other = (torch.nn.functional.one_hot(py, 10) == 0).double()
    return (torch.einsum("jnc,nc->cj", r, other) / other.sum(0)[:, None]).numpy()
ref = torch.load("/tmp/dev/ref_vgg_A.pt", weights_only=False); R = sens(ref)
tot = []
for tag, seed in [(a, int(a[-1])) for a in sys.argv[1:]]:
    sus = torch.load(f"/tmp/dev/{tag}.pt", weights_only=False); D = sens(sus)
    b = (D * R).sum() / (R * R).sum(); D = D - b * R
    U = pats(seed)
    gain = (D * U).sum(0) / (U * U).sum(0)   # per basis: learned pull along the key
    energy = (U * U).sum(0)
    print(tag[:28], seed, "gain", np.round(gain, 2), "key energy", np.round(energy, 2))
    tot.append(gain)
print("mean gain", np.round(np.mean(tot, 0), 2))
