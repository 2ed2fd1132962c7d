import time, random, torch, radcore as rc
from radcore.datasets import load_fashion_mnist
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
x, y = load_fashion_mnist("train"); x, y = x[30000:30250], y[30000:30250]
net = torch.load("/tmp/dev/marker_30000_8.pt", weights_only=False)
mk = rc.marker_from_classifier(net, in_channels=1, mean=M, std=S)
car = rc.draw_carriers(10, mk.dim, randbytes=random.Random(1).randbytes)
with torch.no_grad(): f = mk(x.float()/255); print("feature norm", f.norm(dim=1).mean().item())
for steps, lr, init in [(12, None, 0.5), (40, None, 0.5), (40, 1/255/3, 0.5), (100, 1/255/5, 0.5), (40, None, 0.0)]:
    for eps, floor in [(4, 40.0), (6, None)]:
        t = time.time()
        r = rc.mark(x, y, car, mk, rc.MarkConfig(eps=eps/255, steps=steps, lr=lr, init=init, psnr_floor=floor))
        print(steps, lr, init, eps, floor, f"psnr {r.psnr.mean():.2f} own {r.shift_own.mean():.3f} other {r.shift_other.mean():.3f} ratio {r.shift_ratio:.2f} {time.time()-t:.1f}s", flush=True)
