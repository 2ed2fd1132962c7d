import torch

from radcore.augment import AugmentConfig, random_augment

IDENTITY = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), translate=0.0, flip_p=0.0)


def test_identity_and_flip_are_exact():
    x = torch.rand(3, 2, 9, 7)
    assert torch.allclose(random_augment(x, IDENTITY), x, atol=1e-5)
    flip = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), translate=0.0, flip_p=1.0)
    assert torch.allclose(random_augment(x, flip), x.flip(-1), atol=1e-5)


def test_redrawn_per_call_and_per_image_and_differentiable():
    x = torch.rand(4, 1, 16, 16, requires_grad=True)
    a, b = random_augment(x), random_augment(x)
    assert a.shape == x.shape and not torch.allclose(a, b)
    same = random_augment(x[:1].expand(4, -1, -1, -1))
    assert not torch.allclose(same[0], same[1])  # each image gets its own transform
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_seeded_generator_reproduces():
    x = torch.rand(2, 3, 8, 8)
    a = random_augment(x, generator=torch.Generator().manual_seed(5))
    b = random_augment(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
