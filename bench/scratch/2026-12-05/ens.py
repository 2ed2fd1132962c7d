"""Probe: an ensemble of clean references as the black-box covariate (mean of their response
matrices) instead of one reference. Same suspect, pool and probes as hardsel.py
(CONTROLS=90, random 30 probes/class). REFS = number of references (VGG on the owner's half,
seeds 2, 22, 23, ...). ARCH_MIX=1 makes the extra references SmallResNets.
"""
import os, random, time
import numpy as np, torch
import radcore as rc
from bench.probe_tradeoff import MEAN, STD, cached, train
from radcore.blackbox import BlackboxConfig, blackbox_test, response_matrices
from radcore.datasets import load_fashion_mnist
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.train import accuracy, log_probabilities
torch.set_num_threads(2)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
CONTROLS = int(os.environ.get("CONTROLS", 90)); REFS = int(os.environ.get("REFS", 4))
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
a, b = perm[:30000], perm[30000:]
marker_net = cached("marker", lambda: train("small_resnet", xtr[a], ytr[a], 3, 1, widths=(16, 32, 64, 128)))
marker = rc.marker_from_classifier(marker_net, in_channels=1, mean=MEAN, std=STD)
refs = [cached("ref", lambda: train("vgg_small", xtr[a], ytr[a], 8, 2, width=16))]
for s in range(1, REFS):
    refs.append(cached(f"ref_s{20 + s}", lambda: train("vgg_small", xtr[a], ytr[a], 8, 20 + s, width=16)))
ctl = cached("ctl", lambda: train("vgg_small", xtr[b], ytr[b], 8, 3, width=16))
sus = cached("suspect_hard_marker_e4_f40.0", None)
log("refs", len(refs), "acc", [round(accuracy(r, xte[3000:], yte[3000:], MEAN, STD), 4) for r in refs])
carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
pool, true_index = draw_pool(carriers, CONTROLS, randbytes=random.Random(18).randbytes)
cfg = rc.MarkConfig(eps=4 / 255, psnr_floor=40)
ppath = f"/tmp/dev/ens_probes_c{CONTROLS}.pt"
if os.path.exists(ppath):
    probes = torch.load(ppath, weights_only=False)
else:
    pick = select_probes(yte[:1000], 30, 10)
    probes = mark_probes(xte[pick], yte[pick], pool, true_index, marker, cfg)
    torch.save(probes, ppath)
log("probes ready")
fn = lambda m: (lambda x: log_probabilities(m, x, MEAN, STD))
resp = lambda m: response_matrices(*pool_logprobs(fn(m), probes), probes.labels)
R = [resp(r) for r in refs]
def mean_resp(rs): return {k: np.mean([r[k] for r in rs], axis=0) for k in rs[0]}
for nm, m in (("control", ctl), ("suspect", sus)):
    s = resp(m); out = []
    for stat in ("own", "cross"):
        c = BlackboxConfig(statistic=stat, permutations=50_000)
        for k in range(1, len(R) + 1):
            d = blackbox_test(s, true_index, mean_resp(R[:k]), c)
            out.append(f"{stat} refs{k} {d.log10_p:.2f} (z {d.z:.2f})")
    log(nm + ": " + "; ".join(out))
