"""Augmentation moves images and labels together and changes intensities of images only."""

import numpy as np
import pytest

from mrimaster.segmentation.augment import AugmentConfig, PatchAugmenter, context_size

PATCH = [24, 24, 24]
OFF = AugmentConfig(p_spatial=0, p_gamma=0, p_brightness=0, p_noise=0, p_lowres=0, p_mirror=0)


def _crop(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A context crop: a ball of tumour in a brain; channel 0 shows the tumour."""
    size = context_size(PATCH)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in size], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    brain = r < 0.95
    tumour = r < 0.4
    rng = np.random.default_rng(seed)
    img = np.stack([np.where(tumour, 2.0, np.where(brain, -0.5, 0.0)),
                    np.where(brain, rng.normal(0, 1, size), 0.0),
                    np.zeros(size)]).astype(np.float32)
    reg = np.stack([tumour, tumour, np.zeros(size, bool)]).astype(np.float32)
    return img, reg


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1)


def test_context_crop_is_larger_than_the_patch() -> None:
    assert context_size(PATCH) == [30, 30, 30]


@pytest.mark.parametrize("elastic", [0.0, 1.0])
def test_spatial_steps_keep_image_and_labels_aligned(elastic: float) -> None:
    cfg = AugmentConfig(p_spatial=1, p_elastic=elastic, p_gamma=0, p_brightness=0,
                        p_noise=0, p_lowres=0, p_mirror=0.5)
    aug = PatchAugmenter(PATCH, cfg, seed=3)
    rng = np.random.default_rng(0)
    img, reg = _crop()
    for _ in range(4):
        out_img, out_reg = aug(img, reg, np.array([True, True, False]), 0.0, rng)
        assert out_img.shape == (3, *PATCH) and out_reg.shape == (3, *PATCH)
        assert set(np.unique(out_reg)) <= {0.0, 1.0}  # labels nearest-neighbour, never blended
        assert _dice(out_img[0] > 1.0, out_reg[0] > 0) > 0.9
        assert not out_img[2].any()  # an absent modality stays absent


def test_intensity_steps_never_touch_labels() -> None:
    cfg = AugmentConfig(p_spatial=0, p_gamma=1, p_brightness=1, p_noise=1, p_lowres=1,
                        p_mirror=0)
    aug = PatchAugmenter(PATCH, cfg, seed=1)
    img, reg = _crop()
    out_img, out_reg = aug(img, reg, np.array([True, True, False]), 0.0,
                           np.random.default_rng(1))
    plain_img, plain_reg = PatchAugmenter(PATCH, OFF)(img, reg, np.array([True, True, False]),
                                                      0.0, np.random.default_rng(1))
    assert np.array_equal(out_reg, plain_reg)
    assert not np.allclose(out_img, plain_img)
    assert not out_img[:, plain_img.any(axis=0) == 0].any()  # background stays 0


def test_modality_dropout_keeps_at_least_one_present_channel() -> None:
    aug = PatchAugmenter(PATCH, OFF)
    img, reg = _crop()
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(40):
        out, _ = aug(img, reg, np.array([True, True, False]), 0.5, rng)
        kept = [bool(out[c].any()) for c in range(3)]
        assert sum(kept) >= 1 and not kept[2]
        counts.append(sum(kept))
    assert set(counts) == {1, 2}  # channels are dropped, never all of them
