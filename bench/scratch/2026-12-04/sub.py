import time, os, random, numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.probes import mark_probes, select_probes, pool_logprobs
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
K = int(os.environ.get("K", 16)); EPS = float(os.environ.get("EPS", 4)); FLOOR = float(os.environ.get("FLOOR", 40)); Q = 0.1
PER = int(os.environ.get("PER", 30)); NC = int(os.environ.get("NC", 30)); PEPS = float(os.environ.get("PEPS", 4))
net = torch.load("/tmp/dev/marker_30000_8.pt", weights_only=False).eval()
marker = rc.marker_from_classifier(net, in_channels=1, mean=M, std=S)
V = torch.load("/tmp/dev/jacG.pt")["V"]
def draw(n, seed):
    g = torch.Generator().manual_seed(seed); c = torch.randn(n, K, generator=g, dtype=torch.float64)
    v = c @ V[:, :K].T; return (v / v.norm(dim=1, keepdim=True)).float()
true = rc.Carriers(draw(10, 100 + K), marker_id=marker.marker_id)
pool = rc.Carriers(torch.cat([true.vectors, draw(NC, 200 + K)]), marker_id=marker.marker_id); ti = np.arange(10)
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234)); B = perm[30000:]
yb = ytr[B]; xb = xtr[B].clone()
sel = torch.cat([(yb==c).nonzero().flatten()[: int(round(Q*(yb==c).sum().item()))] for c in range(10)])
name = f"/tmp/dev/sub_K{K}_e{EPS}_f{FLOOR}.pt"
cfg = rc.MarkConfig(eps=EPS/255, psnr_floor=FLOOR)
if os.path.exists(name): sus = torch.load(name, weights_only=False)
else:
    ps = []; own = []; oth = []
    for s in range(0, len(sel), 250):
        i = sel[s:s+250]; r = rc.mark(xb[i], yb[i], true, marker, cfg); xb[i] = r.images; ps.append(r.psnr); own.append(r.shift_own); oth.append(r.shift_other)
    ps = torch.cat(ps); log(f"K {K} marked: PSNR {ps.mean():.2f} min {ps.min():.2f} own {torch.cat(own).mean():.3f} other {torch.cat(oth).mean():.3f}")
    torch.manual_seed(3); sus = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(sus, xb, yb, M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(3)); torch.save(sus, name)
ctl = torch.load("/tmp/dev/ctl.pt", weights_only=False); ref = torch.load("/tmp/dev/ref_30000_8.pt", weights_only=False)
log("acc sus", accuracy(sus, xte[3000:], yte[3000:], M, S))
pidx = select_probes(yte[:1000], PER, 10)
pname = f"/tmp/dev/subprobes_K{K}_{PER}_{NC}_{PEPS}.pt"
if os.path.exists(pname): probes = torch.load(pname, weights_only=False)
else:
    probes = mark_probes(xte[pidx], yte[pidx], pool, ti, marker, rc.MarkConfig(eps=PEPS/255, psnr_floor=None)); torch.save(probes, pname)
log("probes", tuple(probes.marked.shape))
lp = lambda m: (lambda x: log_probabilities(m, x, M, S))
rc_, rm_ = pool_logprobs(lp(ref), probes)
for nm, m in (("control", ctl), ("suspect", sus)):
    c, mk = pool_logprobs(lp(m), probes); out = []
    for stat in ("own", "cross"):
        for use_ref in (True, False):
            d = blackbox_from_logprobs(c, mk, probes.labels, ti, rc_, rm_, BlackboxConfig(statistic=stat, use_reference=use_ref, permutations=20000))
            out.append(f"{stat}/{'ref' if use_ref else 'noref'} {d.log10_p:.2f} (z {d.z:.2f})")
    log(f"K {K} {nm}: " + "; ".join(out))
