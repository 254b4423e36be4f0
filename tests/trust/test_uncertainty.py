import numpy as np
import pytest

from mrimaster.trust.uncertainty import choose_threshold, image_seed, risk_coverage


def test_risk_coverage_by_hand() -> None:
    unc = np.array([0.1, 0.4, 0.2, 0.3])
    correct = np.array([True, False, True, False])
    rc = risk_coverage(unc, correct)
    # order by uncertainty: T, T, F(0.3), F(0.4) -> risks 0, 0, 1/3, 1/2
    np.testing.assert_allclose(rc["risk"], [0, 0, 1 / 3, 1 / 2])
    assert rc["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    assert rc["error_at_100"] == pytest.approx(0.5)


def test_good_ranking_halves_the_error_at_90_percent_coverage() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random(1000) > 0.08
    unc = np.where(correct, rng.uniform(0, 0.6, 1000), rng.uniform(0.3, 1, 1000))
    rc = risk_coverage(unc, correct)
    assert rc["error_at_90"] <= rc["error_at_100"] / 2


def test_threshold_meets_the_target_error() -> None:
    rng = np.random.default_rng(2)
    correct = rng.random(500) > 0.1
    unc = np.where(correct, rng.uniform(0, 0.7, 500), rng.uniform(0.2, 1, 500))
    t = choose_threshold(unc, correct, 0.03)
    accepted = unc <= t
    assert 0.3 < accepted.mean() < 1
    assert (~correct[accepted]).mean() <= 0.03
    assert choose_threshold(np.array([0.1]), np.array([False]), 0.03) == -1.0


def test_uncertainty_estimators_leave_the_weights_untouched() -> None:
    import torch

    from mrimaster.inference.forward import TorchRuntime
    from mrimaster.models.registry import build_model
    from mrimaster.trust.uncertainty import UNCERTAINTY_METHODS, uncertainty
    from tests.conftest import synthetic_slice

    net = build_model("efficientnet-lite0", 4, pretrained=False, image_size=64).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = np.stack([synthetic_slice(i, 64) for i in range(3)])
    runtime = TorchRuntime(net)
    logits, feats = runtime.forward(images)
    for method in UNCERTAINTY_METHODS:
        unc = uncertainty(method, runtime, images, 1.0, logits, feats)
        assert unc.shape == (3,) and ((unc >= 0) & (unc < 1)).all()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not net.training and not any(m.training for m in net.modules())


def test_threshold_ties_never_exceed_the_target() -> None:
    # the example: accepting up to 0.3 has error 1/3 > 0.30, so only 0.1 may be kept
    unc = np.array([0.1, 0.2, 0.3, 0.4, 0.4])
    correct = np.array([True, False, True, True, False])
    t = choose_threshold(unc, correct, 0.30)
    assert t == pytest.approx(0.1)
    accepted = unc <= t
    assert (~correct[accepted]).mean() <= 0.30
    # a tie group is kept or dropped whole: accepting one 0.4 but not the other is impossible
    unc = np.array([0.1, 0.2, 0.2, 0.2])
    correct = np.array([True, True, True, False])
    assert choose_threshold(unc, correct, 0.30) == pytest.approx(0.2)  # 1/4 <= 0.3
    assert choose_threshold(unc, correct, 0.20) == pytest.approx(0.1)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_is_the_largest_that_meets_the_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    unc = rng.integers(0, 12, 60) / 12  # many ties
    correct = rng.random(60) > unc * 0.5
    for target in (0.05, 0.1, 0.2):
        t = choose_threshold(unc, correct, target)
        if t >= 0:
            assert (~correct[unc <= t]).mean() <= target + 1e-12
        for bigger in np.unique(unc[unc > t]):  # every larger threshold misses the target
            assert (~correct[unc <= bigger]).mean() > target


def test_mc_dropout_is_per_image_reproducible_and_independent_of_the_batch() -> None:
    from mrimaster.inference.forward import TorchRuntime
    from mrimaster.models.registry import build_model
    from mrimaster.trust.uncertainty import uncertainty
    from tests.conftest import synthetic_slice

    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    net = build_model("efficientnet-lite0", 4, pretrained=False, image_size=64).eval()
    images = np.stack([synthetic_slice(i, 64, i % 4) for i in range(5)])
    runtime = TorchRuntime(net)
    logits, feats = runtime.forward(images)
    full = uncertainty("mc-dropout", runtime, images, 1.0, logits, feats)
    again = uncertainty("mc-dropout", runtime, images, 1.0, logits, feats)
    np.testing.assert_array_equal(full, again)
    order = [3, 0, 4]
    part = uncertainty("mc-dropout", runtime, images[order], 1.0, logits[order], feats[order])
    np.testing.assert_allclose(part, full[order], rtol=1e-12)
    assert image_seed(images[0]) != image_seed(images[1])


class _CountingRuntime:
    """A runtime whose logits are a fixed function of the image, counting its passes."""

    name = "counting"

    def __init__(self) -> None:
        self.images = 0

    def forward(self, images: np.ndarray, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray]:
        self.images += len(images)
        x = images.astype(np.float64)
        half = x.shape[2] // 2
        left, right = x[:, :, :half].mean((1, 2)), x[:, :, half:].mean((1, 2))
        logits = np.stack([left / 40, right / 40, 0 * left, 0 * left], 1).astype(np.float32)
        return logits, np.ones((len(images), 8), np.float32)

    def head(self) -> None:  # pragma: no cover - not used by the augmentation estimators
        raise AssertionError


@pytest.mark.parametrize("method", ["softmax", "flip", "tta"])
def test_each_estimator_costs_the_passes_it_declares(method: str) -> None:
    from mrimaster.inference.runtime import softmax
    from mrimaster.trust.uncertainty import PASSES, uncertainty

    images = np.zeros((3, 16, 16), np.uint8)
    images[:, :, :8] = np.array([40, 120, 200], np.uint8)[:, None, None]  # bright left half
    runtime = _CountingRuntime()
    logits, feats = runtime.forward(images)
    unc = uncertainty(method, runtime, images, 1.0, logits, feats)
    assert runtime.images == PASSES[method] * len(images)
    if method == "flip":  # mean of the image and its mirror: the two halves swap
        mirrored, _ = runtime.forward(images[:, :, ::-1])
        expected = 1 - ((softmax(logits) + softmax(mirrored)) / 2).max(1)
        np.testing.assert_allclose(unc, expected)
