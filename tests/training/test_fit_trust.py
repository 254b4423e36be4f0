"""The temperature rules of calibration: fitted and shipped as fitted (no floor at 1), and the
shift-aware fit on validation plus its copies under the shift augmentation."""

from __future__ import annotations

import numpy as np
import torch

from mrimaster.data.transforms import augmented_views
from mrimaster.training.fit_trust import SHIFT_DRAWS, CalibrationData, fit_temperatures
from mrimaster.trust.calibration import fit_temperature

SIZE = 32


def _images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(N, SIZE, SIZE)`` uint8: the quadrant of the class is bright."""
    rng = np.random.default_rng(seed)
    out = rng.integers(40, 60, (len(labels), SIZE, SIZE)).astype(np.uint8)
    h = SIZE // 2
    for img, c in zip(out, labels, strict=True):
        img[(c // 2) * h:(c // 2 + 1) * h, (c % 2) * h:(c % 2 + 1) * h] += 150
    return out


class QuadrantRuntime:
    """A stand-in network: logits from the quadrants' mean brightness, a margin of about 1
    between the bright quadrant and the rest (an under-confident network)."""

    def forward(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        h = SIZE // 2
        x = images.astype(np.float32)
        means = np.stack([x[:, r * h:(r + 1) * h, c * h:(c + 1) * h].mean((1, 2))
                          for r in (0, 1) for c in (0, 1)], 1)
        logits = (means - means.mean(1, keepdims=True)) / 150.0
        return logits, means


def _data(n: int = 120) -> CalibrationData:
    rng = np.random.default_rng(1)
    shown = rng.integers(0, 4, n)
    labels = shown.copy()
    wrong = rng.random(n) < 0.1  # one in ten validation labels disagrees with the image
    labels[wrong] = (labels[wrong] + 1) % 4
    empty = np.zeros((0, SIZE, SIZE), np.uint8)
    none = np.zeros(0, np.int64)
    return CalibrationData(_images(shown), labels, empty, none, empty, none)


def test_augmented_views_are_seeded_and_leave_the_global_random_state_alone() -> None:
    images = _images(np.arange(4))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = augmented_views(images, "shift", 2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = augmented_views(images, "shift", 2, seed=5)
    assert a.shape == (8, SIZE, SIZE) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, augmented_views(images, "shift", 2, seed=6))
    assert not np.array_equal(a[:4], images)


def test_validation_temperature_is_shipped_as_fitted_even_below_one() -> None:
    data = _data()
    runtime = QuadrantRuntime()
    logits = runtime.forward(data.x_val)[0]
    temperatures = fit_temperatures(runtime, logits, data)  # type: ignore[arg-type]
    assert temperatures["validation"] == fit_temperature(logits, data.y_val)
    # 90% right with a margin of 1: the fit sharpens, and nothing floors it at 1 any more
    assert temperatures["validation"] < 0.6


def test_shift_aware_temperature_sees_the_harder_shifted_copies() -> None:
    data = _data()
    runtime = QuadrantRuntime()
    logits = runtime.forward(data.x_val)[0]
    temperatures = fit_temperatures(runtime, logits, data)  # type: ignore[arg-type]
    shifted = augmented_views(data.x_val, "shift", SHIFT_DRAWS)
    expected = fit_temperature(np.concatenate([logits, runtime.forward(shifted)[0]]),
                               np.tile(data.y_val, SHIFT_DRAWS + 1))
    assert temperatures["shift-aware"] == expected
    # mirrored and cropped copies put the bright quadrant elsewhere: less sure, a softer fit
    assert temperatures["shift-aware"] > temperatures["validation"]
