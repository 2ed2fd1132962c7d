import os, random, time, numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.blackbox import BlackboxConfig, blackbox_test, response_matrices
from radcore.train import log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
C = "/tmp/radtrace-probe-cache"
ld = lambda n: torch.load(f"{C}/{n}.pt", weights_only=False)
marker = rc.marker_from_classifier(ld("marker"), in_channels=1, mean=M, std=S)
ref, ctl = ld("ref"), ld("ctl")
carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
pool, ti = draw_pool(carriers, 30, randbytes=random.Random(18).randbytes)
neg = rc.Carriers(-pool.vectors, marker_id=pool.marker_id)
xte, yte = load_fashion_mnist("test")
pick = select_probes(yte[:1000], 30, 10)
fn = lambda m: (lambda x: log_probabilities(m, x, M, S))
for eps, floor in [(float(a.split(":")[0]), float(a.split(":")[1]) if ":" in a else None) for a in os.environ.get("SET", "6,4:40").split(",")]:
    cfg = rc.MarkConfig(eps=eps/255, psnr_floor=floor)
    pp = f"/tmp/dev/anti_probes_{eps}_{floor}.pt"
    if os.path.exists(pp): P, N = torch.load(pp, weights_only=False)
    else:
        P = mark_probes(xte[pick], yte[pick], pool, ti, marker, cfg); N = mark_probes(xte[pick], yte[pick], neg, ti, marker, cfg); torch.save((P, N), pp)
    sus = ld(f"suspect_e{eps:g}_f{floor}")
    def R(m):
        a = response_matrices(*pool_logprobs(fn(m), P), P.labels); b = response_matrices(*pool_logprobs(fn(m), N), N.labels)
        return a, b, {k: a[k] - b[k] for k in a}, {k: a[k] + b[k] for k in a}
    rr = R(ref)
    for nm, m in (("control", ctl), ("suspect", sus)):
        ss = R(m); out = []
        for label, i in (("plus", 0), ("minus", 1), ("anti", 2)):
            for stat in ("own", "cross"):
                d = blackbox_test(ss[i], ti, rr[i], BlackboxConfig(statistic=stat, permutations=20000))
                out.append(f"{label}/{stat} {d.log10_p:.2f} (z {d.z:.2f})")
        log(f"eps {eps} floor {floor} {nm}: " + "; ".join(out))
        for stat in ("own", "cross"):
            cs = np.mean([np.corrcoef(ss[0][stat][j], ss[1][stat][j])[0, 1] for j in range(10)])
            log(f"   corr(+,-) {stat} {cs:.3f}")
