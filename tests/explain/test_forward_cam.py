"""CAM from the forward pass against Grad-CAM (Selvaraju et al. 2017, Sec. 3: at a layer pooled
into a linear head, Grad-CAM is CAM) and against the formula w_ck / Z computed by hand."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrimaster.data.images import load_grayscale, prepare_slice
from mrimaster.data.transforms import eval_batch
from mrimaster.errors import MRIMasterError
from mrimaster.explain.cam import GradCAM, default_layer
from mrimaster.explain.forward_cam import ForwardCAM, bilinear_matrix, upsample_bilinear
from mrimaster.models.checkpoint import Classifier, load_classifier
from mrimaster.models.paths import resolve_model_path
from mrimaster.settings import load_settings


class _PooledNet(nn.Module):
    """conv -> BN -> ReLU6 (``act``) -> global average pool -> dropout -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU6()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(F.adaptive_avg_pool2d(self.act(self.bn(self.conv(x))), 1)
                                 .flatten(1)))


@pytest.fixture
def pooled() -> _PooledNet:
    torch.manual_seed(3)
    net = _PooledNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("target", [None, 2, [0, 3]])
def test_synthetic_gap_linear_net_matches_grad_cam_and_the_hand_formula(
        pooled: _PooledNet, target: int | list[int] | None) -> None:
    x = torch.randn(2, 3, 10, 14)  # a 5 x 7 map: non-square, Z = 35
    fwd = ForwardCAM(pooled, "act")(x, target)
    with GradCAM(pooled, "act") as cam:
        grad = cam(x, target)
    np.testing.assert_array_equal(fwd.classes, grad.classes)
    np.testing.assert_allclose(fwd.logits, grad.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fwd.maps, grad.maps, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fwd.upsampled, grad.upsampled, rtol=1e-5, atol=1e-7)
    assert fwd.maps.shape == (2, 5, 7) and fwd.upsampled.shape == (2, 10, 14)
    assert fwd.maps.dtype == np.float32 and fwd.upsampled.dtype == np.float32
    # by hand: alpha_ck = w_ck / Z, map = ReLU(sum_k alpha_ck A^k)
    with torch.no_grad():
        acts = pooled.act(pooled.bn(pooled.conv(x))).numpy()
    w = pooled.fc.weight.detach().numpy()
    for b, c in enumerate(fwd.classes):
        want = np.maximum(np.tensordot(w[c] / 35, acts[b], axes=1), 0)
        np.testing.assert_allclose(fwd.maps[b], want, rtol=1e-5, atol=1e-7)
    assert not pooled.act._forward_hooks  # the standalone call leaves no hook behind


def test_a_layer_not_pooled_into_the_head_is_refused(pooled: _PooledNet) -> None:
    with pytest.raises(MRIMasterError, match="CAM does not apply"):
        ForwardCAM(pooled, "conv")(torch.randn(1, 3, 8, 8))  # BN and ReLU6 lie in between


@pytest.mark.parametrize("n_in,n_out", [(6, 192), (5, 7), (7, 5), (3, 3), (1, 4)])
def test_bilinear_resize_is_pytorchs(n_in: int, n_out: int) -> None:
    maps = np.random.default_rng(n_in * n_out).random((2, n_in, n_in + 1), dtype=np.float32)
    want = F.interpolate(torch.from_numpy(maps)[:, None], size=(n_out, n_out + 2),
                         mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(upsample_bilinear(maps, (n_out, n_out + 2)), want, atol=1e-6)
    np.testing.assert_allclose(bilinear_matrix(n_in, n_out).sum(axis=1), 1, atol=1e-6)


@pytest.fixture(scope="module")
def shipped() -> Classifier:
    return load_classifier(resolve_model_path("default", load_settings().models_dir))


@pytest.mark.realdata
def test_shipped_model_forward_cam_equals_grad_cam_on_real_slices(
        shipped: Classifier, data_root: Path) -> None:
    """Four real slices (one per class folder) through the shipped default model: the maps of
    the forward pass equal Grad-CAM's at the default layer, for the predicted class and for
    another class, normalised as the web app shows them (divided by the maximum)."""
    files = [sorted((data_root / "sartaj-training" / folder).iterdir())[7]
             for folder in ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")]
    x = eval_batch(np.stack([prepare_slice(load_grayscale(f), shipped.image_size)
                             for f in files]))
    layer = default_layer(shipped.net)
    for target in (None, 1):
        fwd = ForwardCAM(shipped.net, layer)(x, target)
        with GradCAM(shipped.net, layer) as cam:
            grad = cam(x, target)
        np.testing.assert_array_equal(fwd.classes, grad.classes)
        for ours, theirs in ((fwd.maps, grad.maps), (fwd.upsampled, grad.upsampled)):
            assert ours.shape == theirs.shape and ours.dtype == np.float32
            peak, want_peak = ours.max(axis=(1, 2)), theirs.max(axis=(1, 2))
            assert (want_peak > 0).all()
            np.testing.assert_allclose(peak, want_peak, rtol=1e-4)
            diff = np.abs(ours / peak[:, None, None] - theirs / want_peak[:, None, None])
            assert diff.max() < 1e-4, diff.max()
    assert fwd.maps.shape == (4, shipped.image_size // 32, shipped.image_size // 32)


def test_served_selector_takes_cam_for_the_shipped_default_layer_only(shipped: Classifier
                                                                     ) -> None:
    from mrimaster.serving.models import stage_layers

    layers = stage_layers(shipped.net, shipped.image_size)
    assert [layer.method for layer in layers] == ["gradcam"] * (len(layers) - 1) + ["cam"]
    assert layers[-1].name == default_layer(shipped.net)


@pytest.mark.parametrize("arch,pooled_into_head", [("efficientnet-lite0", True),
                                                   ("mri-cnn", False), ("seed-cnn", False)])
def test_served_selector_uses_cam_only_where_it_is_grad_cam(arch: str, pooled_into_head: bool
                                                            ) -> None:
    """Random weights: the selector's check must not be fooled (a constant probe image once
    let mri-cnn's residual block pass), and where it says ``cam`` the maps are Grad-CAM's."""
    from mrimaster.models.registry import build_model
    from mrimaster.serving.models import stage_layers

    torch.manual_seed(0)
    net = build_model(arch, 4, pretrained=False, image_size=64).eval()
    last = stage_layers(net, 64)[-1]
    assert (last.method == "cam") is pooled_into_head
    if pooled_into_head:
        x = torch.randn(2, 3, 64, 64)
        with GradCAM(net, last.name) as cam:
            want = cam(x).upsampled
        np.testing.assert_allclose(ForwardCAM(net, last.name)(x).upsampled, want, rtol=1e-4,
                                   atol=1e-6)
