"""Grad-CAM against a computation by hand (Selvaraju et al. 2017, Eq. 1-2)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mrimaster.errors import MRIMasterError
from mrimaster.explain.cam import GradCAM, GradCAMPlusPlus, conv_layers
from mrimaster.models.registry import build_model


def _split_forward(net: nn.Module, conv_index: int, x: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, logits)`` with A the output of the conv at ``features[conv_index]``."""
    features = net.features  # type: ignore[union-attr]
    acts = features[:conv_index + 1](x)
    acts = acts.detach().requires_grad_(True)
    rest = features[conv_index + 1:](acts.clone())  # clone: in-place ReLUs follow
    if hasattr(net, "pool"):
        rest = net.pool(rest)  # type: ignore[operator]
    return acts, net.classifier(rest)  # type: ignore[operator]


def _by_hand(net: nn.Module, conv_index: int, x: torch.Tensor, cls: int) -> np.ndarray:
    acts, logits = _split_forward(net, conv_index, x)
    (grads,) = torch.autograd.grad(logits[:, cls].sum(), acts)  # d y^c / d A^k_ij
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # Eq. 1
    return F.relu((alpha * acts).sum(dim=1)).detach().numpy()  # Eq. 2


@pytest.fixture
def seed_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("seed-cnn", 4, pretrained=False, image_size=64).eval()


@pytest.mark.parametrize("conv_index,layer", [(0, "features.0"), (6, "features.6"),
                                              (9, "features.9")])
def test_matches_hand_computation(seed_cnn: nn.Module, conv_index: int, layer: str) -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    for cls in (0, 2):
        with GradCAM(seed_cnn, layer) as cam:
            result = cam(x, cls)
        np.testing.assert_allclose(result.maps, _by_hand(seed_cnn, conv_index, x, cls),
                                   atol=1e-5, rtol=1e-4)


def test_several_layers_from_one_pass_match_the_hand_computation(seed_cnn: nn.Module) -> None:
    from contextlib import ExitStack

    from mrimaster.explain.cam import explain_layers

    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    layers = {"features.0": 0, "features.6": 6, "features.9": 9}
    with ExitStack() as stack:
        cams = [stack.enter_context(GradCAM(seed_cnn, name)) for name in layers]
        results = explain_layers(cams, x, 1)
    for result, index in zip(results, layers.values(), strict=True):
        np.testing.assert_allclose(result.maps, _by_hand(seed_cnn, index, x, 1),
                                   atol=1e-5, rtol=1e-4)
    assert all(len(m._forward_hooks) == 0 for m in conv_layers(seed_cnn).values())


@pytest.mark.parametrize("frozen", [False, True])
def test_backward_reaches_frozen_layers_and_leaves_weight_gradients_alone(
        seed_cnn: nn.Module, frozen: bool) -> None:
    """Only the activations' gradients are computed: with every weight frozen (nothing upstream
    needs gradients) the maps are still right, and no weight gets a ``.grad``."""
    from contextlib import ExitStack

    from mrimaster.explain.cam import explain_layers

    seed_cnn.requires_grad_(not frozen)
    x = torch.randn(2, 3, 64, 64)
    with ExitStack() as stack:
        cams = [stack.enter_context(GradCAM(seed_cnn, name)) for name in ("features.0",
                                                                          "features.9")]
        results = explain_layers(cams, x, 2)
    assert all(p.grad is None for p in seed_cnn.parameters())
    seed_cnn.requires_grad_(True)  # the hand computation needs no weight gradients either
    for result, index in zip(results, (0, 9), strict=True):
        np.testing.assert_allclose(result.maps, _by_hand(seed_cnn, index, x, 2),
                                   atol=1e-5, rtol=1e-4)


def test_maps_are_valid_class_specific_and_hooks_are_released(seed_cnn: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    layer = conv_layers(seed_cnn)["features.9"]
    with GradCAM(seed_cnn, "features.9") as cam:
        a, b = cam(x, 0), cam(x, 3)
        assert len(layer._forward_hooks) == 1
    assert len(layer._forward_hooks) == 0
    for r in (a, b):
        assert np.isfinite(r.upsampled).all() and (r.upsampled >= 0).all()
        assert r.upsampled.shape == (2, 64, 64) and (r.maps >= 0).all()
    assert not np.allclose(a.maps, b.maps)
    with pytest.raises(RuntimeError), GradCAM(seed_cnn, "features.9") as cam:
        raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0


def test_gradcam_plus_plus_matches_its_formula(seed_cnn: nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    acts, logits = _split_forward(seed_cnn, 6, x)
    (g,) = torch.autograd.grad(logits[:, 1].sum(), acts)
    alpha = g**2 / torch.where((d := 2 * g**2 + acts.sum((2, 3), keepdim=True) * g**3) != 0,
                               d, torch.ones_like(d))
    weights = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    expected = F.relu((weights * acts).sum(1)).detach().numpy()
    with GradCAMPlusPlus(seed_cnn, "features.6") as cam:
        np.testing.assert_allclose(cam(x, 1).maps, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["mri-cnn", "efficientnet-lite0"])
def test_every_conv_layer_of_registered_models(name: str) -> None:
    net = build_model(name, 4, pretrained=False, image_size=64).eval()
    layers = list(conv_layers(net))
    for layer in (layers[0], layers[len(layers) // 2], layers[-1]):
        with GradCAM(net, layer) as cam:
            r = cam(torch.randn(1, 3, 64, 64))
        assert r.upsampled.shape == (1, 64, 64) and np.isfinite(r.upsampled).all()


def test_bad_layer_names_list_the_choices(seed_cnn: nn.Module) -> None:
    with pytest.raises(MRIMasterError, match="does not exist.*\n.*features.10, features.0"):
        GradCAM(seed_cnn, "features.99")
    with pytest.raises(MRIMasterError, match="does not output feature maps"), \
            GradCAM(seed_cnn, "classifier.1") as cam:
        cam(torch.randn(1, 3, 64, 64))


class _GapNet(nn.Module):
    """conv -> BN -> ReLU (a module: the CAM target) -> global average pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.act = nn.ReLU()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("size", [4, 7])
def test_gradcam_plus_plus_against_a_derivation_for_a_gap_linear_head(size: int) -> None:
    """Independent reference (derived, not copied): with y^c = sum_k w_ck mean_ij A^k_ij, the
    gradient is the constant g_k = w_ck / Z (Z = h w). Then Grad-CAM weighs channel k by
    w_ck / Z (CAM, Zhou et al. 2016, up to 1/Z), and Grad-CAM++ (Eq. 19) by
    sum_ij g^2 / (2 g^2 + S_k g^3) ReLU(g) = Z ReLU(g_k) / (2 + S_k g_k), S_k = sum_ij A^k_ij.
    """
    torch.manual_seed(size)
    net = _GapNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        acts = net.act(net.bn(net.conv(x))).numpy()  # (B, K, h, w)
    z = size * size
    for cls in range(3):
        g = net.fc.weight[cls].detach().numpy() / z  # (K,)
        s_k = acts.sum((2, 3))  # (B, K)
        w_pp = z * np.maximum(g, 0) / np.where(2 + s_k * g != 0, 2 + s_k * g, 1)
        want_pp = np.maximum((w_pp[:, :, None, None] * acts).sum(1), 0)
        want = np.maximum((g[None, :, None, None] * acts).sum(1), 0)
        with GradCAMPlusPlus(net, "act") as cam:
            np.testing.assert_allclose(cam(x, cls).maps, want_pp, rtol=1e-4, atol=1e-6)
        with GradCAM(net, "act") as cam:
            np.testing.assert_allclose(cam(x, cls).maps, want, rtol=1e-4, atol=1e-7)


def test_default_layer_is_the_rectified_head_for_efficientnet() -> None:
    from mrimaster.explain.cam import default_layer, resolve_layer

    net = build_model("efficientnet-lite0", 4, pretrained=False, image_size=64).eval()
    assert default_layer(net) == "_act_head"
    name, module = resolve_layer(net, None)
    assert isinstance(module, nn.ReLU6)
    with GradCAM(net) as cam:  # any module works, here a block and the activation
        r = cam(torch.randn(2, 3, 64, 64))
    assert r.maps.shape == (2, 2, 2) and (r.maps >= 0).all()
    with GradCAM(net, "_blocks.10") as cam:
        assert cam(torch.randn(1, 3, 64, 64)).maps.shape == (1, 4, 4)


def test_a_module_that_runs_twice_per_pass_is_refused() -> None:
    net = build_model("mri-cnn", 4, pretrained=False, image_size=64).eval()
    reused = next(n for n, m in net.named_modules() if isinstance(m, nn.ReLU) and "." in n
                  and n.endswith("relu"))
    with pytest.raises(MRIMasterError, match="runs 2 times"), GradCAM(net, reused) as cam:
        cam(torch.randn(1, 3, 64, 64))
