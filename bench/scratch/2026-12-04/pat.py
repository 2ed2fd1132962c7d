import sys, time, os, math
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs, paired_ttest_log10_p
from radcore.probes import select_probes
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
K = int(os.environ.get("K", 6)); PSNR = float(os.environ.get("PSNR", 40)); Q = float(os.environ.get("Q", 0.1))
SYM = os.environ.get("SYM", "1") == "1"
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
A, B = perm[:30000], perm[30000:]
# DCT-II basis 28 px
n = 28
k = torch.arange(K).double(); t = torch.arange(n).double()
basis1 = torch.cos(math.pi * (t[None, :] + 0.5) * k[:, None] / n)  # K x n
basis1 = basis1 / basis1.norm(dim=1, keepdim=True)
kx = [i for i in range(K)] 
def pattern(coef):  # coef K x K -> n x n unit L2
    p = torch.einsum("ab,ai,bj->ij", coef, basis1, basis1)
    if SYM: p = (p + p.flip(1)) / 2
    return (p / p.norm()).float()
g = torch.Generator().manual_seed(int(os.environ.get("SEED", 5)))
NPOOL = 10 + 60
coefs = torch.randn(NPOOL, K, K, generator=g, dtype=torch.float64)
coefs[:, 0, 0] = 0  # no DC
pats = torch.stack([pattern(c) for c in coefs])  # N x 28 x 28
true_index = np.arange(10)
def apply(x_u8, p, psnr):
    x = x_u8.float()
    target = 255**2 / 10**(psnr/10)  # mse
    a = torch.full((x.shape[0],1,1,1), math.sqrt(target)*n)  # unit-L2 pattern: rms = a/n
    for _ in range(6):
        y = (x + a * p).clamp(0, 255).round()
        mse = ((y - x)**2).mean((1,2,3), keepdim=True).clamp_min(1e-6)
        a = a * (target / mse).sqrt().clamp(0.5, 2.0)
    y = (x + a * p).clamp(0, 255).round()
    mse = ((y - x)**2).mean((1,2,3))
    return y.to(torch.uint8), 10*torch.log10(255**2/mse.clamp_min(1e-9))
def train(x, y, seed, epochs=8):
    torch.manual_seed(seed)
    net = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(net, x, y, M, S, TrainConfig(epochs=epochs), torch.Generator().manual_seed(seed))
    return net
yb = ytr[B]; xb = xtr[B].clone()
sel = torch.cat([(yb==c).nonzero().flatten()[: int(round(Q*(yb==c).sum().item()))] for c in range(10)])
# marking: per image, pattern of its class; lower psnr bound -> use psnr slightly above floor
xm, ps = apply(xb[sel], pats[yb[sel]].unsqueeze(1), PSNR + 0.3)
log(f"marked {len(sel)} PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
xb[sel] = xm
name = f"/tmp/dev/pat_K{K}_p{PSNR}_q{Q}_s{int(SYM)}.pt"
if os.path.exists(name): sus = torch.load(name, weights_only=False)
else: sus = train(xb, yb, 3); torch.save(sus, name)
ctl = torch.load("/tmp/dev/ctl.pt", weights_only=False)
ref = torch.load("/tmp/dev/ref_30000_8.pt", weights_only=False)
log("acc sus", accuracy(sus, xte[3000:], yte[3000:], M, S), "ctl", accuracy(ctl, xte[3000:], yte[3000:], M, S))
pidx = select_probes(yte[:1000], 50, 10)
px, py = xte[pidx], yte[pidx]
lp = lambda m: (lambda x: log_probabilities(m, x, M, S))
for ppsnr in (40, 34, 28):
    marked = torch.stack([apply(px, pats[w].expand(len(px),1,28,28), ppsnr)[0] for w in range(NPOOL)])
    def lps(m):
        c = lp(m)(px); mk = lp(m)(marked.reshape(-1,1,28,28)).reshape(NPOOL, len(px), -1); return c, mk
    rc_, rm_ = lps(ref)
    for nm, m in (("control", ctl), ("suspect", sus)):
        c, mk = lps(m); out = []
        for stat in ("own", "cross"):
            for use_ref in (True, False):
                d = blackbox_from_logprobs(c, mk, py, true_index, rc_, rm_, BlackboxConfig(statistic=stat, use_reference=use_ref, permutations=20000))
                out.append(f"{stat}/{'ref' if use_ref else 'noref'} {d.log10_p:.2f} (z {d.z:.2f})")
        log(f"probe psnr {ppsnr} {nm}: " + "; ".join(out))
