"""Probe: class-wise secret textures in pixel space (a shortcut a CNN can learn whatever the
crop offset: gratings are shift-invariant up to phase, made flip-symmetric), PSNR-floored.
MODE: grating (additive), gmask (grating modulated by the object's intensity), lowfreq (pat.py).
SELECT: unset (a random Q of each class), hard (the hardest Q by SCORER's loss) or band (ranks
SKIP..SKIP+Q); SCORER: ref (the owner's reference, default) or marker (the demo's marker, from
bench/probe_tradeoff's cache).
Black-box test as in the product: pool of 10 true + NCTL control textures, probes marked with
each, own/cross statistic, reference covariate, permutation p.
"""
import math, os, time
import numpy as np, torch, torch.nn.functional as F
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs
from radcore.probes import select_probes
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
MODE = os.environ.get("MODE", "grating"); PSNR = float(os.environ.get("PSNR", 40))
Q = float(os.environ.get("Q", 0.1)); NCTL = int(os.environ.get("NCTL", 90))
FLO, FHI = float(os.environ.get("FLO", 4)), float(os.environ.get("FHI", 10))  # cycles per 28 px
NG = int(os.environ.get("NG", 3)); SEED = int(os.environ.get("SEED", 5))
os.makedirs("/tmp/dev", exist_ok=True)
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
A, B = perm[:30000], perm[30000:]
def cached(name, make):
    path = f"/tmp/dev/{name}.pt"
    if os.path.exists(path): return torch.load(path, weights_only=False)
    net = make(); torch.save(net, path); return net
def train(x, y, seed):
    torch.manual_seed(seed)
    net = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(net, x, y, M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(seed))
    return net
g = torch.Generator().manual_seed(SEED)
N = 10 + NCTL
yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
def texture():
    p = torch.zeros(28, 28)
    for _ in range(NG):
        f = FLO + (FHI - FLO) * torch.rand(1, generator=g).item()
        th = math.pi * torch.rand(1, generator=g).item()
        ph = 2 * math.pi * torch.rand(1, generator=g).item()
        kx, ky = 2 * math.pi * f / 28 * math.cos(th), 2 * math.pi * f / 28 * math.sin(th)
        p += torch.cos(kx * (xx - 13.5) + ky * (yy - 13.5) + ph)
    p = (p + p.flip(1)) / 2
    return p / p.norm()
if MODE == "lowfreq":
    K = int(os.environ.get("K", 6)); k = torch.arange(K).double(); t = torch.arange(28).double()
    b1 = torch.cos(math.pi * (t[None, :] + 0.5) * k[:, None] / 28); b1 = b1 / b1.norm(dim=1, keepdim=True)
    co = torch.randn(N, K, K, generator=g, dtype=torch.float64); co[:, 0, 0] = 0
    pats = torch.stack([(lambda p: (p + p.flip(1)) / 2)(torch.einsum("ab,ai,bj->ij", c, b1, b1)) for c in co]).float()
    pats = pats / pats.flatten(1).norm(dim=1)[:, None, None]
else:
    pats = torch.stack([texture() for _ in range(N)])
def apply(x_u8, p, psnr):
    x = x_u8.float()
    shape = p * (x / 255) if MODE == "gmask" else p.expand_as(x)
    target = 255**2 / 10 ** (psnr / 10)
    a = torch.full((x.shape[0], 1, 1, 1), 50.0)
    for _ in range(8):
        y = (x + a * shape).clamp(0, 255).round()
        mse = ((y - x) ** 2).mean((1, 2, 3), keepdim=True).clamp_min(1e-6)
        a = a * (target / mse).sqrt().clamp(0.5, 2.0)
    for _ in range(30):
        y = (x + a * shape).clamp(0, 255).round()
        mse = ((y - x) ** 2).mean((1, 2, 3), keepdim=True)
        low = 10 * torch.log10(255**2 / mse.clamp_min(1e-9)) < psnr
        if not low.any(): break
        a = torch.where(low, a * 0.97, a)
    return y.to(torch.uint8), 10 * torch.log10(255**2 / mse.flatten().clamp_min(1e-9))
yb = ytr[B]; xb = xtr[B].clone()
gs = torch.Generator().manual_seed(99)
ref = cached("ref_vgg_A", lambda: train(xtr[A], ytr[A], 21))
SKIP = float(os.environ.get("SKIP", 0))
if os.environ.get("SELECT") in ("hard", "band"):  # ranked by SCORER's loss, hardest first
    scorer = ref if os.environ.get("SCORER", "ref") == "ref" else torch.load("/tmp/radtrace-probe-cache/marker.pt", weights_only=False)
    rl = -log_probabilities(scorer, xb, M, S).gather(1, yb[:, None]).squeeze(1)
    def band(c):  # ranks SKIP..SKIP+Q of class c (SELECT=hard: SKIP=0)
        n = (yb == c).sum().item(); lo = int(round(SKIP * n)); hi = lo + int(round(Q * n))
        return (yb == c).nonzero().flatten()[rl[yb == c].argsort(descending=True)[lo:hi]]
    sel = torch.cat([band(c) for c in range(10)])
else:
    sel = torch.cat([(yb == c).nonzero().flatten()[torch.randperm(int((yb == c).sum()), generator=gs)[: int(round(Q * (yb == c).sum().item()))]] for c in range(10)])
xm, ps = apply(xb[sel], pats[yb[sel]].unsqueeze(1), PSNR)
log(f"{MODE}: marked {len(sel)} PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
xb[sel] = xm
band_tag = f"{SKIP:g}{os.environ.get('SCORER', '')}" if os.environ.get("SELECT") == "band" else ""
k_tag = f"_K{os.environ['K']}" if os.environ.get("K", "6") != "6" else ""  # K: lowfreq's DCT size
tag = f"tex{os.environ.get('SELECT', '')}{band_tag}_{MODE}{k_tag}_p{PSNR}_q{Q}_f{FLO}-{FHI}_n{NG}_s{SEED}"
TSEED = int(os.environ.get("TSEED", 3))  # the suspect's training seed (the control's is 3)
if TSEED != 3: tag += f"_t{TSEED}"
sus = cached(tag, lambda: train(xb, yb, TSEED))
ctl = cached("ctl_vgg", lambda: train(xtr[B], ytr[B], 3))
ref = cached("ref_vgg_A", lambda: train(xtr[A], ytr[A], 21))
log("acc sus", accuracy(sus, xte[3000:], yte[3000:], M, S), "ctl", accuracy(ctl, xte[3000:], yte[3000:], M, S))
pidx = select_probes(yte[:1000], 50, 10)
if os.environ.get("PSEL") == "hard":  # probes the reference is least sure of (carrier-blind)
    rl = -log_probabilities(ref, xte[:2000], M, S).gather(1, yte[:2000, None]).squeeze(1)
    pidx = torch.cat([(yte[:2000] == c).nonzero().flatten()[rl[yte[:2000] == c].argsort(descending=True)[:50]] for c in range(10)])
px, py = xte[pidx], yte[pidx]
for ppsnr in [float(v) for v in os.environ.get("PROBE_PSNR", "40,32").split(",")]:
    marked = torch.stack([apply(px, pats[w].expand(len(px), 1, 28, 28), ppsnr)[0] for w in range(N)])
    def lps(m):
        return log_probabilities(m, px, M, S), log_probabilities(m, marked.reshape(-1, 1, 28, 28), M, S).reshape(N, len(px), -1)
    rc, rm = lps(ref)
    for nm, m in (("control", ctl), ("suspect", sus)):
        c, mk = lps(m); out = []
        for stat in ("own", "cross"):
            for use_ref in (True, False):
                d = blackbox_from_logprobs(c, mk, py, np.arange(10), rc, rm, BlackboxConfig(statistic=stat, use_reference=use_ref, permutations=20000))
                out.append(f"{stat}/{'ref' if use_ref else 'noref'} {d.log10_p:.2f} (z {d.z:.2f})")
        log(f"probe psnr {ppsnr} {nm}: " + "; ".join(out))
