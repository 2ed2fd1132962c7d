import pytest
import torch

import radcore as rc
from radcore.nets import SmallResNet, build_classifier, penultimate


def test_registry_lists_the_three_kinds():
    assert {"efficientnet-lite0", "resnet18", "classifier"} <= set(rc.available_markers())
    with pytest.raises(ValueError, match="choose one of"):
        rc.get_marker("vit-huge")


def test_efficientnet_lite0_offline_gray_and_rgb():
    m = rc.get_marker("efficientnet-lite0", input_size=64)
    assert m.dim == 1280 and m.marker_id.startswith("efficientnet-lite0:")
    gray = torch.rand(2, 1, 28, 28)
    f_gray = m(gray)
    f_rgb = m(gray.expand(-1, 3, -1, -1))
    assert f_gray.shape == (2, 1280)
    assert torch.allclose(f_gray, f_rgb, atol=1e-5)  # gray is the same image in RGB
    assert not any(p.requires_grad for p in m.parameters())


def test_resnet18_from_local_weights_only(tmp_path):
    from torchvision.models import resnet18

    path = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    m = rc.get_marker("resnet18", weights_path=path, input_size=64)
    assert m(torch.rand(1, 3, 40, 40)).shape == (1, 512)
    with pytest.raises(ValueError, match="weights_path"):
        rc.get_marker("resnet18")
    # A pickled object (not a plain state dict) is refused by weights_only loading.
    evil = tmp_path / "evil.pth"
    torch.save({"x": object()}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported"):
        rc.get_marker("resnet18", weights_path=evil)


def test_classifier_marker_is_its_penultimate_layer_and_stays_eval():
    net = build_classifier("small_resnet", 10, in_channels=1, widths=(8, 16))
    m = rc.marker_from_classifier(net, in_channels=1, mean=(0.5,), std=(0.5,))
    m.train()
    assert not m.training and not net.training
    x = torch.rand(3, 1, 28, 28)
    feats, logits = penultimate(net, (x - 0.5) / 0.5)
    assert torch.allclose(m(x), feats)
    assert m.dim == 16 and logits.shape == (3, 10)
    # An RGB image goes through a gray marker as its luma.
    assert m(x.expand(-1, 3, -1, -1)).shape == (3, 16)
    assert isinstance(net, SmallResNet)


def test_a_classifier_marker_is_safe_to_share_between_threads():
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(0)
    marker = rc.marker_from_classifier(
        SmallResNet(10, 1, widths=(4, 8)), in_channels=1, mean=(0.5,), std=(0.5,)
    )
    x = torch.rand(64, 1, 28, 28)
    expected = marker(x)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: marker(x), range(64)))
    assert all(torch.allclose(o, expected) for o in outs)
