"""The demo's experiment without Prefect, caching what does not depend on the key.

Same split, architectures, seeds and recipe as `radtrace demo` (flows/demo.py): owner half =
train[:30000], public half = train[30000:], held-out = test[:2000] (probes: the first 50 of each
class), accuracy on test[2000:]. The marker (small ResNet, 3 epochs, seed 1), the reference
(VGG w16, 8 epochs, seed 2) and the control (VGG, clean public half, seed 3) are trained once and
cached in /tmp/h8. Per KEY (a seeded carrier draw: harness only, the product uses os.urandom):
pattern marks at 40 dB on the hardest Q of each class after passing over SKIP, a suspect (seed 3),
its accuracy (overall and per class) and the sensitivity matrices D of suspect, control and
reference, saved to /tmp/h8/key{KEY}_{tag}.npz for statistic variants (stats.py).

ALLOC=flat (default: Q of every class) or ALLOC=hard (the same total, each class's share
proportional to how many of its public images the marker misclassifies, floored at FLOOR).
Usage: KEY=1 .venv/bin/python bench/scratch/2026-12-08/harness.py
"""
import os, sys, time
sys.path.insert(0, os.path.dirname(__file__))
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.markers import marker_from_classifier
from radcore.patterns import add_patterns, render_patterns
from radcore.probes import select_probes
from radcore.response import make_response_probes, sensitivity
from radcore.carriers import Carriers
from radcore.train import log_probabilities
from common import M, S, cached, train

torch.set_num_threads(2)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
KEY = int(os.environ.get("KEY", 1)); Q = float(os.environ.get("Q", 0.1))
SKIP = float(os.environ.get("SKIP", 0.02)); ALLOC = os.environ.get("ALLOC", "flat")
FLOOR = float(os.environ.get("FLOOR", 0.03)); PSNR = float(os.environ.get("PSNR", 40))
EPOCHS = int(os.environ.get("EPOCHS", 8)); TSEED = int(os.environ.get("TSEED", 3))
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
xo, yo, xp, yp = xtr[:30000], ytr[:30000], xtr[30000:], ytr[30000:]
xh, yh, xt, yt = xte[:2000], yte[:2000], xte[2000:], yte[2000:]

marker_net = cached("marker", lambda: train("small_resnet", xo, yo, 1, 3, widths=[16, 32, 64, 128]))
ref = cached("reference", lambda: train("vgg_small", xo, yo, 2, 8, width=16))
ctl = cached(f"control_e{EPOCHS}_t{TSEED}", lambda: train("vgg_small", xp, yp, TSEED, EPOCHS, width=16))
marker = marker_from_classifier(marker_net, in_channels=1, mean=M, std=S)

g = torch.Generator().manual_seed(10_000 + KEY)
vec = torch.randn(10, marker.dim, generator=g, dtype=torch.float64)
carriers = Carriers(vec / vec.norm(dim=1, keepdim=True))
with torch.no_grad():
    loss = -marker.class_log_probs(xp.float() / 255).gather(1, yp[:, None]).squeeze(1)
n_c = torch.bincount(yp, minlength=10)
if ALLOC == "flat":
    want = (Q * n_c.double()).round().long()
else:  # same total, shares proportional to the marker's misclassified images, floored
    wrong = torch.bincount(yp[marker.class_log_probs(xp.float() / 255).argmax(1) != yp], minlength=10).double()
    share = torch.clamp(wrong / wrong.sum(), min=FLOOR); share = share / share.sum()
    want = (share * Q * len(yp)).round().long().minimum(n_c // 2)
sel = []
for c in range(10):
    idx = (yp == c).nonzero().flatten()
    order = idx[loss[idx].argsort(descending=True)]
    lo = int(round(SKIP * len(idx)))
    sel.append(order[lo:lo + int(want[c])])
sel = torch.cat(sel)
xm = xp.clone()
xm[sel] = add_patterns(xp[sel].double() / 255, render_patterns(carriers.vectors[yp[sel]], 28, 28), PSNR)
mse = ((xm[sel].double() - xp[sel].double()) / 255).pow(2).flatten(1).mean(1)
psnr = 10 * torch.log10(1 / mse)
log(f"key {KEY}: marked {len(sel)} per class {want.tolist()} PSNR mean {psnr.mean():.2f} min {psnr.min():.2f}")
tag = f"{ALLOC}_s{SKIP:g}_q{Q:g}_e{EPOCHS}_t{TSEED}" + (f"_p{PSNR:g}" if PSNR != 40 else "")
sus = cached(f"suspect_key{KEY}_{tag}", lambda: train("vgg_small", xm, yp, TSEED, EPOCHS, width=16))
probes = make_response_probes(xh[select_probes(yh, 50, 10)], yh[select_probes(yh, 50, 10)], carriers, PSNR)
def lp(m): return lambda x: log_probabilities(m, x, M, S)
out = {"coef": probes.coefficients.numpy(), "want": want.numpy()}
for name, m in (("sus", sus), ("ctl", ctl), ("ref", ref)):
    out[f"D_{name}"] = sensitivity(lp(m), probes)
    pred = log_probabilities(m, xt, M, S).argmax(1)
    out[f"acc_{name}"] = float((pred == yt).float().mean())
    out[f"pcacc_{name}"] = np.array([float((pred[yt == c] == c).float().mean()) for c in range(10)])
np.savez(f"/tmp/h8/key{KEY}_{tag}.npz", **out)
from radcore.response import response_test
r = {n: response_test(out[f"D_{n}"], out["coef"], out["D_ref"]).log10_p for n in ("sus", "ctl")}
log(f"key {KEY} {tag}: acc sus {out['acc_sus']:.4f} ctl {out['acc_ctl']:.4f} "
    f"({100*(out['acc_sus']-out['acc_ctl']):+.2f}); response sus {r['sus']:.2f} ctl {r['ctl']:.2f}")
