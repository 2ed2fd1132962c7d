import random, numpy as np, torch
import radcore as rc
from radcore.datasets import load_fashion_mnist
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.blackbox import BlackboxConfig, blackbox_test, response_matrices
from radcore.train import log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
C = "/tmp/radtrace-probe-cache"
ld = lambda n: torch.load(f"{C}/{n}.pt", weights_only=False)
marker = rc.marker_from_classifier(ld("marker"), in_channels=1, mean=M, std=S)
ref, ctl, sus = ld("ref"), ld("ctl"), ld("suspect_e6_fNone")
carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
pool, ti = draw_pool(carriers, 30, randbytes=random.Random(18).randbytes)
xte, yte = load_fashion_mnist("test"); pick = select_probes(yte[:1000], 30, 10)
P1, _ = torch.load("/tmp/dev/anti_probes_6.0_None.pt", weights_only=False)
P2 = mark_probes(xte[pick], yte[pick], pool, ti, marker, rc.MarkConfig(eps=6/255, psnr_floor=None), generator=torch.Generator().manual_seed(99))
fn = lambda m: (lambda x: log_probabilities(m, x, M, S))
R = {(nm, k): response_matrices(*pool_logprobs(fn(m), P), P.labels) for nm, m in (("ref", ref), ("ctl", ctl), ("sus", sus)) for k, P in (("P1", P1), ("P2", P2))}
for nm in ("ref", "ctl", "sus"):
    for st in ("own", "cross"):
        c = np.mean([np.corrcoef(R[(nm, "P1")][st][j], R[(nm, "P2")][st][j])[0, 1] for j in range(10)])
        print(nm, st, "corr across carriers between two probe markings", round(float(c), 3))
for nm in ("ctl", "sus"):
    for st in ("own", "cross"):
        zs = []
        for k in ("P1", "P2"):
            d = blackbox_test(R[(nm, k)], ti, R[("ref", k)], BlackboxConfig(statistic=st, permutations=20000)); zs.append(d)
        avg = {kk: (R[(nm, "P1")][kk] + R[(nm, "P2")][kk]) / 2 for kk in R[(nm, "P1")]}
        ravg = {kk: (R[("ref", "P1")][kk] + R[("ref", "P2")][kk]) / 2 for kk in R[("ref", "P1")]}
        da = blackbox_test(avg, ti, ravg, BlackboxConfig(statistic=st, permutations=20000))
        print(nm, st, "z P1 %.2f P2 %.2f averaged %.2f (log10p %.2f)" % (zs[0].z, zs[1].z, da.z, da.log10_p), "per-class corr", round(float(np.corrcoef(zs[0].z_per_class, zs[1].z_per_class)[0,1]), 2))
