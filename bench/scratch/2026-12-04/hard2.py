import time, os, numpy as np, torch
import radcore as rc
import sys; sys.path.insert(0, "/tmp/dev")
import hard
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.probes import pool_logprobs
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs
from radcore.quality import psnr
M, S = (0.286,), (0.353,)
log = hard.log
K = 16
V = torch.load("/tmp/dev/jacG.pt")["V"]
def draw(n, seed):
    g = torch.Generator().manual_seed(seed); c = torch.randn(n, K, generator=g, dtype=torch.float64)
    v = c @ V[:, :K].T; return (v / v.norm(dim=1, keepdim=True)).float()
hard.carriers = rc.Carriers(draw(10, 100 + K), marker_id=hard.marker.marker_id)
probes = torch.load(f"/tmp/dev/subprobes_K{K}_30_30_4.0.pt", weights_only=False); ti = np.arange(10)
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234)); B = perm[30000:]
yb = ytr[B]
sel = torch.cat([(yb==c).nonzero().flatten()[: int(round(0.1*(yb==c).sum().item()))] for c in range(10)])
lp = lambda m: (lambda x: log_probabilities(m, x, M, S))
ref = torch.load("/tmp/dev/ref_30000_8.pt", weights_only=False)
rc_, rm_ = pool_logprobs(lp(ref), probes)
for lam in [float(v) for v in os.environ.get("LAMS", "1,3").split(",")]:
    xb = xtr[B].clone(); ps = []
    for s in range(0, len(sel), 250):
        i = sel[s:s+250]; q = hard.mark_hard(xb[i], yb[i], lam); ps.append(psnr(xb[i].float()/255, q)); xb[i] = q
    ps = torch.cat(ps); log(f"lam {lam}: PSNR {ps.mean():.2f} min {ps.min():.2f}")
    torch.manual_seed(3); sus = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(sus, xb, yb, M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(3))
    torch.save(sus, f"/tmp/dev/hard_K{K}_lam{lam}.pt")
    c, mk = pool_logprobs(lp(sus), probes); out = []
    for stat in ("own", "cross"):
        d = blackbox_from_logprobs(c, mk, probes.labels, ti, rc_, rm_, BlackboxConfig(statistic=stat, permutations=20000))
        out.append(f"{stat}/ref {d.log10_p:.2f} (z {d.z:.2f})")
    log(f"lam {lam} acc {accuracy(sus, xte[3000:], yte[3000:], M, S):.4f}: " + "; ".join(out))
