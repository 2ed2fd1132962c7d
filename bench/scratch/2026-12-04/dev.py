import sys, time, json, os, random
import numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.probes import draw_pool, mark_probes, select_probes, pool_logprobs
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs, paired_ttest_log10_p
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
NH = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
EP = int(sys.argv[2]) if len(sys.argv) > 2 else 8
Q = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
EPS = float(sys.argv[4]) if len(sys.argv) > 4 else 4
FLOOR = float(sys.argv[5]) if len(sys.argv) > 5 else 40
K = int(sys.argv[6]) if len(sys.argv) > 6 else 40
PER = int(sys.argv[7]) if len(sys.argv) > 7 else 50
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
g = torch.Generator().manual_seed(1234)
perm = torch.randperm(60000, generator=g)
A, B = perm[:NH], perm[30000:30000+NH]
def train(arch, x, y, epochs, seed, **kw):
    torch.manual_seed(seed)
    net = build_classifier(arch, 10, 1, **kw)
    r = train_classifier(net, x, y, M, S, TrainConfig(epochs=epochs), torch.Generator().manual_seed(seed))
    log(arch, "trained", [round(v,3) for v in r.loss_per_epoch], "s/epoch", round(np.mean(r.seconds_per_epoch),1))
    return net
tag = f"{NH}_{EP}"
def cached(name, fn):
    p = f"/tmp/dev/{name}_{tag}.pt"
    if os.path.exists(p):
        return torch.load(p, weights_only=False)
    v = fn(); torch.save(v, p); return v
marker_net = cached("marker", lambda: train("small_resnet", xtr[A], ytr[A], 3, 1, widths=(16,32,64,128)))
log("marker acc", accuracy(marker_net, xte[3000:], yte[3000:], M, S))
marker = rc.marker_from_classifier(marker_net, in_channels=1, mean=M, std=S)
ref = cached("ref", lambda: train("vgg_small", xtr[A], ytr[A], EP, 2, width=16))
log("ref acc", accuracy(ref, xte[3000:], yte[3000:], M, S))
carriers = rc.draw_carriers(10, marker.dim, marker_id=marker.marker_id, randbytes=random.Random(7).randbytes)
cfg = rc.MarkConfig(eps=EPS/255, psnr_floor=FLOOR)
xb, yb = xtr[B].clone(), ytr[B]
sel = torch.cat([(yb==c).nonzero().flatten()[: int(round(Q*(yb==c).sum().item()))] for c in range(10)])
ps, t = [], time.time()
for s in range(0, len(sel), 250):
    i = sel[s:s+250]; r = rc.mark(xb[i], yb[i], carriers, marker, cfg); xb[i] = r.images; ps.append(r.psnr)
ps = torch.cat(ps); log(f"marked {len(sel)} in {time.time()-t:.1f}s PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
sus = train("vgg_small", xb, yb, EP, 3, width=16)
ctl = train("vgg_small", xtr[B], yb, EP, 3, width=16)
for nm, m in (("suspect", sus), ("control", ctl)):
    log(nm, "acc", accuracy(m, xte[3000:], yte[3000:], M, S))
pidx = select_probes(yte[:1000], PER, 10)
pool, ti = draw_pool(carriers, K, randbytes=random.Random(8).randbytes)
t = time.time()
probes = mark_probes(xte[pidx], yte[pidx], pool, ti, marker, cfg)
log(f"probes marked {probes.marked.shape} in {time.time()-t:.1f}s")
lp = lambda m: (lambda x: log_probabilities(m, x, M, S))
rc_, rm_ = pool_logprobs(lp(ref), probes)
out = {}
for nm, m in (("suspect", sus), ("control", ctl)):
    c, mk = pool_logprobs(lp(m), probes)
    for stat in ("own", "cross"):
        for use_ref in (True, False):
            d = blackbox_from_logprobs(c, mk, probes.labels, ti, rc_, rm_, BlackboxConfig(statistic=stat, use_reference=use_ref))
            log(nm, stat, "ref" if use_ref else "noref", f"log10p {d.log10_p:.2f} (perm {d.log10_p_permutation:.2f}) z {d.z:.2f}", [round(v,1) for v in d.z_per_class])
    log(nm, "paired t", paired_ttest_log10_p(c, mk, probes.labels, ti))
    held = xte[1000:3000]
    wb = rc.whitebox_test(marker, m, held.float()/255, carriers, suspect_transform=lambda x: (x-M[0])/S[0])
    log(nm, "whitebox", round(wb.log10_p,2))
# null calibration by rotating: choose 10 random pool carriers as true for the control model
torch.save({"probes": probes, "ti": ti}, f"/tmp/dev/probes_{tag}.pt")
