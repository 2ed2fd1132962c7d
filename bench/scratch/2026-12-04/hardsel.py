"""Probe: the product's carrier marks (eps 4/255, 40 dB floor) on the HARDEST 10% of each class
(highest cross-entropy under SCORER: the marker or the owner's reference), instead of a random
10%. Probes: random 30/class (as bench/probe_tradeoff.py) and the reference's hardest 50/class of
test images 0-1999. Selection and probe choice never look at the carriers: the permutation
test stays exact.
"""
import os, random, time
import torch
import radcore as rc
from bench.probe_tradeoff import MEAN, STD, cached, train
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs
from radcore.datasets import load_fashion_mnist
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.train import accuracy, log_probabilities
torch.set_num_threads(2)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
SCORER = os.environ.get("SCORER", "marker"); CONTROLS = int(os.environ.get("CONTROLS", 30))
EPS, FLOOR = float(os.environ.get("EPS", 4)), float(os.environ.get("FLOOR", 40))
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
a, b = perm[:30000], perm[30000:]
marker_net = cached("marker", lambda: train("small_resnet", xtr[a], ytr[a], 3, 1, widths=(16, 32, 64, 128)))
marker = rc.marker_from_classifier(marker_net, in_channels=1, mean=MEAN, std=STD)
ref = cached("ref", lambda: train("vgg_small", xtr[a], ytr[a], 8, 2, width=16))
ctl = cached("ctl", lambda: train("vgg_small", xtr[b], ytr[b], 8, 3, width=16))
carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
pool, true_index = draw_pool(carriers, CONTROLS, randbytes=random.Random(18).randbytes)
xb, yb = xtr[b], ytr[b]
scorer = marker_net if SCORER == "marker" else ref
loss = -log_probabilities(scorer, xb, MEAN, STD).gather(1, yb[:, None]).squeeze(1)
sel = torch.cat([(yb == c).nonzero().flatten()[loss[yb == c].argsort(descending=True)[: round(0.1 * int((yb == c).sum()))]] for c in range(10)])
cfg = rc.MarkConfig(eps=EPS / 255, psnr_floor=FLOOR)
def marked_suspect():
    x = xb.clone()
    for s in range(0, len(sel), 250):
        i = sel[s : s + 250]
        x[i] = rc.mark(x[i], yb[i], carriers, marker, cfg).images
    return train("vgg_small", x, yb, 8, 3, width=16)
sus = cached(f"suspect_hard_{SCORER}_e{EPS:g}_f{FLOOR}", marked_suspect)
held_x, held_y = xte[3000:], yte[3000:]
log("acc suspect", accuracy(sus, held_x, held_y, MEAN, STD), "control", accuracy(ctl, held_x, held_y, MEAN, STD))
fn = lambda m: (lambda x: log_probabilities(m, x, MEAN, STD))
rl = -log_probabilities(ref, xte[:2000], MEAN, STD).gather(1, yte[:2000, None]).squeeze(1)
hard = torch.cat([(yte[:2000] == c).nonzero().flatten()[rl[yte[:2000] == c].argsort(descending=True)[:50]] for c in range(10)])
sets = {"random30": select_probes(yte[:1000], 30, 10), "hard50": hard}
for pname in os.environ.get("PROBESETS", "random30,hard50").split(","):
    pick = sets[pname]
    probes = mark_probes(xte[pick], yte[pick], pool, true_index, marker, cfg)
    ref_lp = pool_logprobs(fn(ref), probes)
    for nm, m in (("control", ctl), ("suspect", sus)):
        clean, mk = pool_logprobs(fn(m), probes); out = []
        for stat in ("own", "cross"):
            d = blackbox_from_logprobs(clean, mk, probes.labels, true_index, *ref_lp, BlackboxConfig(statistic=stat, permutations=50_000))
            out.append(f"{stat} {d.log10_p:.2f} (z {d.z:.2f})")
        log(f"{pname} {nm}: " + "; ".join(out))
