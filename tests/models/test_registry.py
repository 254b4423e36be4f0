from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mrimaster.data.transforms import normalize
from mrimaster.errors import ModelError
from mrimaster.models.registry import MODELS, build_model, get_spec
from mrimaster.models.vgg16 import build_vgg16, vgg16_cache_path


@pytest.mark.parametrize("name", [n for n in MODELS if n != "vgg16"])
def test_forward_shape(name: str) -> None:
    size = 64 if name != "seed-cnn" else 256
    net = build_model(name, 4, pretrained=False, image_size=size).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, size, size))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ModelError, match="choose one of: seed-cnn"):
        get_spec("resnet9000")


def test_seed_cnn_matches_the_seed_architecture() -> None:
    net = build_model("seed-cnn", 4, pretrained=False)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64]
    assert all(c.kernel_size == (3, 3) for c in convs)
    dense = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [d.out_features for d in dense] == [100, 4]


def test_efficientnet_lite0_real_imagenet_weights_recognise_a_cat() -> None:
    from skimage import data  # dev dependency: a real photo with a known ImageNet class

    net = build_model("efficientnet-lite0", 4, pretrained=True)
    imagenet = build_model("efficientnet-lite0", 1000, pretrained=True).eval()
    # the backbone is ImageNet's; only the head is new
    assert torch.equal(net._conv_head.weight, imagenet._conv_head.weight)
    x = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224)), np.float32) / 255
    rgb = torch.from_numpy(x).permute(2, 0, 1)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        top = imagenet((rgb - mean) / std).argmax(1).item()
    assert top == 285  # ImageNet class 285: Egyptian cat
    assert normalize(torch.zeros(1, 1, 4, 4)).shape == (1, 3, 4, 4)


def test_vgg16_without_cached_weights_says_how_to_get_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):
        build_vgg16(4, pretrained=True)


def test_vgg16_loads_weights_from_torchvision_cache(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Place a weights file of the right shapes where torchvision looks; the real loader runs."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)  # the input and the new head: the step below must not depend on
    # what ran before in this process (with other global random states its gradient was 0)
    reference = build_vgg16(1000, pretrained=False)
    state = {k: torch.full_like(v, 0.01) for k, v in reference.state_dict().items()}
    state["features.0.weight"] = torch.full_like(state["features.0.weight"], 0.5)
    cache = vgg16_cache_path()
    assert str(cache).startswith(str(tmp_path))
    cache.parent.mkdir(parents=True)
    torch.save(state, cache)
    del reference

    net = build_vgg16(4, pretrained=True)
    assert torch.all(net.features[0].weight == 0.5)  # came from the cached file
    assert not any(p.requires_grad for p in net.features.parameters())  # features frozen
    assert net.classifier[6].out_features == 4 and net.classifier[2].p == 0.2
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 1e-3)
    before = net.classifier[6].weight.clone()
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 224, 224)),
                                             torch.tensor([0, 3]))
    loss.backward()
    opt.step()
    assert not torch.equal(before, net.classifier[6].weight)
    assert net.features[0].weight.grad is None
