import sys, time, os, random
import numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.probes import draw_pool, mark_probes, select_probes, pool_logprobs
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs, paired_ttest_log10_p
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
NH, EP, Q = 30000, 8, 0.1
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
    return net
def cached(name, fn):
    p = f"/tmp/dev/{name}.pt"
    if os.path.exists(p): return torch.load(p, weights_only=False)
    v = fn(); torch.save(v, p); return v
marker_net = torch.load("/tmp/dev/marker_30000_8.pt", weights_only=False)
marker = rc.marker_from_classifier(marker_net, in_channels=1, mean=M, std=S)
ref = torch.load("/tmp/dev/ref_30000_8.pt", weights_only=False)
carriers = rc.draw_carriers(10, marker.dim, marker_id=marker.marker_id, randbytes=random.Random(17).randbytes)
ctl = cached("ctl", lambda: train("vgg_small", xtr[B], ytr[B], EP, 3, width=16))
yb = ytr[B]
sel = torch.cat([(yb==c).nonzero().flatten()[: int(round(Q*(yb==c).sum().item()))] for c in range(10)])
sus = {}
for eps, floor in ((6, None), (4, 40.0)):
    def mk():
        xb = xtr[B].clone(); ps=[]; own=[]; oth=[]
        cfg = rc.MarkConfig(eps=eps/255, psnr_floor=floor)
        for s in range(0, len(sel), 250):
            i = sel[s:s+250]; r = rc.mark(xb[i], yb[i], carriers, marker, cfg); xb[i] = r.images; ps.append(r.psnr); own.append(r.shift_own); oth.append(r.shift_other)
        ps=torch.cat(ps); log(f"eps {eps} floor {floor}: PSNR {ps.mean():.2f} min {ps.min():.2f} shift own {torch.cat(own).mean():.3f} other {torch.cat(oth).mean():.3f}")
        return train("vgg_small", xb, yb, EP, 3, width=16)
    sus[(eps, floor)] = cached(f"sus_e{eps}_f{floor}_c17", mk)
    log("suspect", eps, floor, "acc", accuracy(sus[(eps, floor)], xte[3000:], yte[3000:], M, S))
pidx = select_probes(yte[:1000], 30, 10)
lp = lambda m: (lambda x: log_probabilities(m, x, M, S))
for peps in (4, 10):
    pool, ti = draw_pool(carriers, 30, randbytes=random.Random(18 + peps).randbytes)
    t = time.time()
    probes = mark_probes(xte[pidx], yte[pidx], pool, ti, marker, rc.MarkConfig(eps=peps/255, psnr_floor=None))
    log(f"probes eps {peps} marked {tuple(probes.marked.shape)} in {time.time()-t:.1f}s")
    rc_, rm_ = pool_logprobs(lp(ref), probes)
    for nm, m in [("control", ctl)] + [(f"sus{k}", v) for k, v in sus.items()]:
        c, mk = pool_logprobs(lp(m), probes)
        res = []
        for stat in ("own", "cross"):
            for use_ref in (True, False):
                d = blackbox_from_logprobs(c, mk, probes.labels, ti, rc_, rm_, BlackboxConfig(statistic=stat, use_reference=use_ref, permutations=50000))
                res.append(f"{stat}/{'ref' if use_ref else 'noref'} {d.log10_p:.2f} (z {d.z:.2f})")
        log(f"probe-eps {peps} {nm}: " + "; ".join(res) + f"; paired-t {paired_ttest_log10_p(c, mk, probes.labels, ti):.2f}")
