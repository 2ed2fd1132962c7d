import random, time, numpy as np, torch
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
ref, ctl, sus = ld("ref"), ld("ctl"), ld("suspect_e6_fNone")
carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
pool, ti = draw_pool(carriers, 180, randbytes=random.Random(19).randbytes)
xte, yte = load_fashion_mnist("test"); pick = select_probes(yte[:1000], 30, 10)
P = mark_probes(xte[pick], yte[pick], pool, ti, marker, rc.MarkConfig(eps=6/255, psnr_floor=None), generator=torch.Generator().manual_seed(5))
torch.save(P, "/tmp/dev/many_probes_e6.pt"); log("probes", tuple(P.marked.shape))
fn = lambda m: (lambda x: log_probabilities(m, x, M, S))
R = {nm: response_matrices(*pool_logprobs(fn(m), P), P.labels) for nm, m in (("ref", ref), ("ctl", ctl), ("sus", sus))}
for k in (30, 90, 180):
    cols = np.arange(10 + k)
    sub = lambda r: {kk: v[:, cols] for kk, v in r.items()}
    for nm in ("ctl", "sus"):
        out = []
        for st in ("own", "cross"):
            d = blackbox_test(sub(R[nm]), ti, sub(R["ref"]), BlackboxConfig(statistic=st, permutations=50000))
            out.append(f"{st} {d.log10_p:.2f} (z {d.z:.2f}, {d.tail})")
        log(f"controls {k} {nm}: " + "; ".join(out))
