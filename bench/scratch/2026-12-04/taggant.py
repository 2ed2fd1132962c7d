"""Probe: clean-label key poisoning by gradient matching (the idea of "data taggants",
Bouaziz et al. 2025, built on the gradient matching of Geiping et al. 2021, "Witches' Brew").
Secret key: K key images x_k with random target classes y_k. Marked images (10% of the
release, all from class y_k for key k, labels untouched) are perturbed within a PSNR floor so
that training on them moves a model the way training on (x_k, y_k) would. Test: does the
suspect rank y_k high on x_k? Under H0 y_k is a uniform draw independent of the model.
"""
import math, os, time
import numpy as np, torch, torch.nn.functional as F
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
from radcore.augment import AugmentConfig, random_augment
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
PSNR = float(os.environ.get("PSNR", 40)); STEPS = int(os.environ.get("STEPS", 100))
Q = float(os.environ.get("Q", 0.1)); TAG = os.environ.get("TAG", "a")
os.makedirs("/tmp/dev", exist_ok=True)
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
A, B = perm[:30000], perm[30000:]
def cached(name, make):
    path = f"/tmp/dev/{name}.pt"
    if os.path.exists(path): return torch.load(path, weights_only=False)
    net = make(); torch.save(net, path); return net
def train(arch, x, y, seed, **kw):
    torch.manual_seed(seed)
    net = build_classifier(arch, 10, 1, **kw)
    train_classifier(net, x, y, M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(seed))
    return net
sur = cached("sur_resnet", lambda: train("small_resnet", xtr[A], ytr[A], 11, widths=(16, 32, 64, 128)))
log("surrogate acc", accuracy(sur, xte[3000:], yte[3000:], M, S))
ctl = cached("ctl_vgg", lambda: train("vgg_small", xtr[B], ytr[B], 3, width=16)) if os.environ.get("VICTIM") != "small_resnet" else cached("ctl_resnet", lambda: train("small_resnet", xtr[B], ytr[B], 3, widths=(16,32,64,128)))
log("control acc", accuracy(ctl, xte[3000:], yte[3000:], M, S))

g = torch.Generator().manual_seed(77)
# keys: 10 in-distribution (held-out test images 2000-2999, target != true class), 10 smooth noise
tgt_in = torch.randperm(10, generator=g)
key_in = []
pool = torch.arange(2000, 3000)[torch.randperm(1000, generator=g)]
for c in tgt_in.tolist():
    i = next(int(j) for j in pool if int(yte[j]) != c and int(j) not in key_in); key_in.append(i)
x_in = xte[key_in].float() / 255
noise = torch.randn(10, 1, 7, 7, generator=g)
x_ood = torch.sigmoid(2 * F.interpolate(noise, size=28, mode="bilinear", align_corners=False))
tgt_ood = torch.randperm(10, generator=g)
keys = torch.cat([x_in, x_ood]); targets = torch.cat([tgt_in, tgt_ood])
K = len(keys)
norm = lambda x: (x - M[0]) / S[0]
aug = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), translate=2 / 28, flip_p=0.5)
params = [p for p in sur.parameters() if p.requires_grad]
sur.eval()

yb = ytr[B]; xb = xtr[B].clone()
radius = math.sqrt(784 * 10 ** (-(PSNR + 0.4) / 10))
per_key = int(Q * len(B)) // K
used = torch.zeros(len(B), dtype=torch.bool)
name = f"/tmp/dev/tag_{TAG}_p{PSNR}_s{STEPS}.pt"
if os.path.exists(name):
    xb = torch.load(name)
else:
    for k in range(K):
        c = int(targets[k])
        cand = ((yb == c) & ~used).nonzero().flatten()
        idx = cand[torch.randperm(len(cand), generator=g)[:per_key]]; used[idx] = True
        x0 = xb[idx].float() / 255
        xt = keys[k : k + 1].expand(16, -1, -1, -1)
        lt = F.cross_entropy(sur(norm(random_augment(xt, aug, g))), torch.full((16,), c))
        gt = [t.detach() for t in torch.autograd.grad(lt, params)]
        gtn = torch.sqrt(sum((t * t).sum() for t in gt))
        delta = torch.zeros_like(x0).uniform_(-radius / 28, radius / 28, generator=g).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=radius / 28 / 4)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [STEPS // 2, 3 * STEPS // 4], 0.3)
        for step in range(STEPS):
            xa = random_augment((x0 + delta).clamp(0, 1), aug, g)
            lp = F.cross_entropy(sur(norm(xa)), torch.full((len(idx),), c))
            gp = torch.autograd.grad(lp, params, create_graph=True)
            dot = sum((a * b).sum() for a, b in zip(gp, gt))
            gpn = torch.sqrt(sum((a * a).sum() for a in gp))
            loss = 1 - dot / (gpn * gtn)
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            with torch.no_grad():
                d = (x0 + delta).clamp(0, 1) - x0
                n = d.flatten(1).norm(dim=1).clamp_min(1e-12)
                delta.copy_(d * (radius / n).clamp(max=1.0)[:, None, None, None])
        with torch.no_grad():
            out = ((x0 + delta) * 255).round().clamp(0, 255)
            for _ in range(20):  # 8-bit rounding can push PSNR under the floor: shrink until not
                mse = ((out - x0 * 255) ** 2).mean((1, 2, 3))
                ps = 10 * torch.log10(255**2 / mse.clamp_min(1e-9))
                low = ps < PSNR
                if not low.any(): break
                delta[low] *= 0.97
                out = ((x0 + delta) * 255).round().clamp(0, 255)
            xb[idx] = out.to(torch.uint8)
        log(f"key {k} target {c}: cos {1 - loss.item():.3f} PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
    torch.save(xb, name)
changed = (xb != xtr[B]).flatten(1).any(1)
mse = ((xb.float() - xtr[B].float()) ** 2).flatten(1).mean(1)[changed]
ps = 10 * torch.log10(255**2 / mse)
log(f"marked {int(changed.sum())} images; PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
sus = cached(f"sus_tag_{TAG}_p{PSNR}_s{STEPS}_{os.environ.get('VICTIM','vgg_small')}", lambda: (train("small_resnet", xb, yb, 3, widths=(16,32,64,128)) if os.environ.get("VICTIM")=="small_resnet" else train("vgg_small", xb, yb, 3, width=16)))
log("suspect acc", accuracy(sus, xte[3000:], yte[3000:], M, S))

def key_matrix(net, reps=32):
    gg = torch.Generator().manual_seed(5)
    xs = keys.repeat(reps, 1, 1, 1)
    with torch.no_grad():
        lp = F.log_softmax(net(norm(random_augment(xs, aug, gg))), 1).reshape(reps, K, 10)
    return lp.mean(0)
for nm, net in (("control", ctl), ("suspect", sus)):
    Mk = key_matrix(net)
    rank = (Mk > Mk.gather(1, targets[:, None])).sum(1) + 1
    z = (Mk.gather(1, targets[:, None]).squeeze(1) - Mk.mean(1)) / Mk.std(1)
    pt = Mk.gather(1, targets[:, None]).squeeze(1).exp()
    log(f"{nm}: ranks in {rank[:10].tolist()} ood {rank[10:].tolist()}")
    log(f"{nm}: p(target) in {[round(v, 3) for v in pt[:10].tolist()]} ood {[round(v, 3) for v in pt[10:].tolist()]}")
    log(f"{nm}: z mean in {z[:10].mean():.2f} ood {z[10:].mean():.2f}")
