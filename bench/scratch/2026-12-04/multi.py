import os, random, time, math, numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.probes import mark_probes, pool_logprobs, select_probes
from radcore.blackbox import response_matrices, _residual_z
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from scipy import special
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
C = "/tmp/radtrace-probe-cache"
ld = lambda n: torch.load(f"{C}/{n}.pt", weights_only=False)
marker = rc.marker_from_classifier(ld("marker"), in_channels=1, mean=M, std=S)
ref, ctl = ld("ref"), ld("ctl")
m = int(os.environ.get("MM", 4)); eps = float(os.environ.get("EPS", 4)); floor = 40.0 if eps == 4 else None
NC = 30
true = rc.draw_carriers(10 * m, marker.dim, randbytes=random.Random(300 + m).randbytes)  # carrier c*m+k
ctrl = rc.draw_carriers(NC, marker.dim, randbytes=random.Random(400 + m).randbytes)
pool = rc.Carriers(torch.cat([true.vectors, ctrl.vectors]), marker_id=marker.marker_id)
T = np.arange(10 * m).reshape(10, m)  # pool columns of class j's carriers
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234)); b = perm[30000:]
xb, yb = xtr[b].clone(), ytr[b]
sel = torch.cat([(yb == c).nonzero().flatten()[: round(0.1 * int((yb == c).sum()))] for c in range(10)])
cfg = rc.MarkConfig(eps=eps / 255, psnr_floor=floor)
name = f"/tmp/dev/multi_m{m}_e{eps}.pt"
if os.path.exists(name): sus = torch.load(name, weights_only=False)
else:
    virt = torch.empty_like(yb)
    for c in range(10):
        idx = (yb[sel] == c).nonzero().flatten()
        virt[sel[idx]] = c * m + torch.arange(len(idx)) % m
    ps = []
    for s in range(0, len(sel), 250):
        i = sel[s:s+250]; r = rc.mark(xb[i], virt[i], true, marker, cfg); xb[i] = r.images; ps.append(r.psnr)
    ps = torch.cat(ps); log(f"m {m} marked PSNR {ps.mean():.2f} min {ps.min():.2f}")
    torch.manual_seed(3); sus = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(sus, xb, yb, M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(3)); torch.save(sus, name)
log("acc", accuracy(sus, xte[3000:], yte[3000:], M, S))
pick = select_probes(yte[:1000], 30, 10)
pname = f"/tmp/dev/multi_probes_m{m}_e{eps}.pt"
if os.path.exists(pname): P = torch.load(pname, weights_only=False)
else: P = mark_probes(xte[pick], yte[pick], pool, np.arange(10), marker, cfg); torch.save(P, pname)
log("probes", tuple(P.marked.shape))
fn = lambda mod: (lambda x: log_probabilities(mod, x, M, S))
def zmat(R, Rref, stat):
    return np.stack([_residual_z(R[stat][j], [Rref[stat][j], R["own_shift"][j]]) for j in range(10)])
def test(z, T, B=50000, seed=0):
    c, k = T.shape; n = z.shape[1]
    zobs = z[np.arange(c)[:, None], T].sum() / math.sqrt(c * k)
    g = torch.Generator().manual_seed(seed); zt = torch.from_numpy(z)
    pick = torch.rand(B, n, generator=g).argsort(1)[:, : c * k]  # B x ck
    rows = torch.arange(c).repeat_interleave(k)
    null = zt[rows[None, :].expand(B, -1), pick].sum(1).numpy() / math.sqrt(c * k)
    ex = int((null >= zobs - 1e-12).sum()); lp_perm = math.log10((1 + ex) / (1 + B))
    mu, sd = null.mean(), null.std(ddof=1)
    lp = lp_perm if ex >= 10 else min(lp_perm, float(special.log_ndtr(-(zobs - mu) / sd)) / math.log(10))
    return zobs, lp, mu, sd
Rref = response_matrices(*pool_logprobs(fn(ref), P), P.labels)
for nm, mod in (("control", ctl), ("suspect", sus)):
    R = response_matrices(*pool_logprobs(fn(mod), P), P.labels)
    for stat in ("own", "cross"):
        z = zmat(R, Rref, stat)
        zo, lp, mu, sd = test(z, T)
        zo1, lp1, _, _ = test(z, T[:, :1])
        log(f"m {m} eps {eps} {nm} {stat}: all {m}/class z {zo:.2f} log10p {lp:.2f} (null mu {mu:.2f} sd {sd:.2f}); one/class z {zo1:.2f} log10p {lp1:.2f}")
