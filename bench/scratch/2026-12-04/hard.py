import time, os, math, random
import numpy as np, torch, torch.nn.functional as F
import radcore as rc
from radcore.augment import random_augment
from radcore.mark import _quantize, _enforce_psnr_floor, carrier_shift
from radcore.quality import psnr
from radcore.datasets import load_fashion_mnist
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
net = torch.load("/tmp/dev/marker_30000_8.pt", weights_only=False).eval()
marker = rc.marker_from_classifier(net, in_channels=1, mean=M, std=S)
carriers = rc.draw_carriers(10, marker.dim, marker_id=marker.marker_id, randbytes=random.Random(7).randbytes)
def logits(x): return net((x - M[0]) / S[0])
def mark_hard(x_u8, y, lam, eps=4/255, steps=12, floor=40.0, aug=rc.AugmentConfig(), g=None, kappa=None):
    x0 = x_u8.float() / 255; u = carriers.vectors[y]
    with torch.no_grad(): f0 = marker(x0)
    delta = ((torch.rand(x0.shape, generator=g) * 2 - 1) * 0.5 * eps).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=eps / 3)
    for _ in range(steps):
        xt = (x0 + delta).clamp(0, 1); xa = random_augment(xt, aug, g)
        loss = -((marker(xa) - f0) * u).sum(1)
        if lam:
            ce = F.cross_entropy(logits(xa), y, reduction="none")
            loss = loss - lam * ce
        opt.zero_grad(); loss.sum().backward(); opt.step()
        with torch.no_grad(): delta.clamp_(-eps, eps)
    with torch.no_grad():
        q = _quantize(x0, x0 + delta.detach(), eps)
        if floor: q = _enforce_psnr_floor(x0, delta.detach(), q, floor, eps)
    return q
if __name__ == "__main__":
    x, y = load_fashion_mnist("train"); x, y = x[30000:30500], y[30000:30500]
    with torch.no_grad(): p0 = F.softmax(logits(x.float()/255), 1).gather(1, y[:, None]).mean()
    log(f"clean p(c) {p0:.3f}")
    for lam in (0, 0.1, 0.3, 1.0, 3.0):
        q = mark_hard(x, y, lam)
        own, oth = carrier_shift(x, q, y, carriers, marker)
        with torch.no_grad(): pm = F.softmax(logits(q.float()/255), 1).gather(1, y[:, None]).squeeze(1)
        log(f"lam {lam}: psnr {psnr(x.float()/255, q).mean():.2f} own {own.mean():.3f} other {oth.mean():.3f} p(c) {pm.mean():.3f} wrong {(pm<0.5).float().mean():.3f}")
