import time, random, torch, radcore as rc
from radcore.datasets import load_fashion_mnist
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
x, y = load_fashion_mnist("train"); x, y = x[30000:30250], y[30000:30250]
net = torch.load("/tmp/dev/marker_30000_8.pt", weights_only=False)
mk = rc.marker_from_classifier(net, in_channels=1, mean=M, std=S)
car = rc.draw_carriers(10, mk.dim, randbytes=random.Random(1).randbytes)
mild = rc.AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), translate=2/28/2, flip_p=0.5)
for aug_name, aug in [("default", rc.AugmentConfig()), ("mild", mild), ("flip-only", rc.AugmentConfig(scale=(1.0,1.0), ratio=(1.0,1.0), translate=0.0, flip_p=0.5))]:
    for steps in (12, 40):
        r = rc.mark(x, y, car, mk, rc.MarkConfig(eps=4/255, steps=steps, psnr_floor=40.0, augment=aug))
        own, oth = rc.carrier_shift(x, r.images, y, car, mk, mild)
        own0, oth0 = rc.carrier_shift(x, r.images, y, car, mk, None)
        print(aug_name, steps, f"psnr {r.psnr.mean():.2f} own(train-aug) {own.mean():.3f}/{oth.mean():.3f}  own(no-aug) {own0.mean():.3f}/{oth0.mean():.3f}", flush=True)
