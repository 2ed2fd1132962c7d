import random, torch, radcore as rc
from radcore.datasets import load_fashion_mnist
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
x, y = load_fashion_mnist("train"); x, y = x[30000:30200], y[30000:30200]
net = torch.load("/tmp/dev/marker_30000_8.pt", weights_only=False)
mk = rc.marker_from_classifier(net, in_channels=1, mean=M, std=S)
car = rc.draw_carriers(10, mk.dim, randbytes=random.Random(1).randbytes)
x0 = x.float()/255; u = car.vectors[y]
with torch.no_grad(): f0 = mk(x0)
# one-step sign attack along u, no augmentation
xr = x0.clone().requires_grad_(True)
(mk(xr)*u).sum().backward()
for eps in (4, 8):
    xa = (x0 + eps/255*xr.grad.sign()).clamp(0,1)
    with torch.no_grad(): d = mk(xa) - f0
    print("sign step eps", eps, "shift own", (d*u).sum(1).mean().item(), "|d|", d.norm(dim=1).mean().item())
# PGD 50 steps, no augmentation, no rounding
for eps in (4, 8):
    delta = torch.zeros_like(x0, requires_grad=True)
    for _ in range(50):
        loss = -(mk((x0+delta).clamp(0,1)) * u).sum()
        g, = torch.autograd.grad(loss, delta)
        with torch.no_grad(): delta -= eps/255/10 * g.sign(); delta.clamp_(-eps/255, eps/255)
    with torch.no_grad(): d = mk((x0+delta).clamp(0,1)) - f0
    print("pgd eps", eps, "shift own", (d*u).sum(1).mean().item(), "|d|", d.norm(dim=1).mean().item(), "f0 norm", f0.norm(dim=1).mean().item())
