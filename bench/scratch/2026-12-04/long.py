import os, random, time, numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.probes import draw_pool, pool_logprobs
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
C = "/tmp/radtrace-probe-cache"
ld = lambda n: torch.load(f"{C}/{n}.pt", weights_only=False)
marker = rc.marker_from_classifier(ld("marker"), in_channels=1, mean=M, std=S)
ref = ld("ref")
carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
pool, ti = draw_pool(carriers, 30, randbytes=random.Random(18).randbytes)
EP = int(os.environ.get("EP", 20)); eps = 6.0
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234)); b = perm[30000:]
xb, yb = xtr[b].clone(), ytr[b]
sel = torch.cat([(yb == c).nonzero().flatten()[: round(0.1 * int((yb == c).sum()))] for c in range(10)])
cfg = rc.MarkConfig(eps=eps / 255, psnr_floor=None)
for s in range(0, len(sel), 250):
    i = sel[s:s+250]; xb[i] = rc.mark(xb[i], yb[i], carriers, marker, cfg).images
log("marked")
torch.manual_seed(3); sus = build_classifier("vgg_small", 10, 1, width=16)
train_classifier(sus, xb, yb, M, S, TrainConfig(epochs=EP), torch.Generator().manual_seed(3))
torch.save(sus, f"/tmp/dev/long_e6_ep{EP}.pt")
log("acc", accuracy(sus, xte[3000:], yte[3000:], M, S))
P, N = torch.load("/tmp/dev/anti_probes_6.0_None.pt", weights_only=False)
fn = lambda m: (lambda x: log_probabilities(m, x, M, S))
rl = pool_logprobs(fn(ref), P)
for nm, m in (("sus8", ld("suspect_e6_fNone")), (f"sus{EP}", sus)):
    c, mk = pool_logprobs(fn(m), P); out = []
    for stat in ("own", "cross"):
        d = blackbox_from_logprobs(c, mk, P.labels, ti, *rl, BlackboxConfig(statistic=stat, permutations=20000))
        out.append(f"{stat} {d.log10_p:.2f} (z {d.z:.2f})")
    log(nm, "; ".join(out))
