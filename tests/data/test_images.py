from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrimaster.data.images import foreground_box, load_grayscale, prepare_slice
from mrimaster.errors import ImageLoadError
from tests.conftest import synthetic_slice


def test_text_file_named_jpg_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_grayscale(bad)


def test_truncated_jpeg_is_a_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(synthetic_slice(1)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_grayscale(bad)


def test_rgb_is_converted_to_grayscale(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(synthetic_slice(2)).convert("RGB").save(path)
    gray = load_grayscale(path)
    assert gray.dtype == np.uint8 and gray.ndim == 2


def test_foreground_box_and_prepare_slice_remove_borders() -> None:
    img = np.zeros((100, 200), np.uint8)
    img[20:60, 50:130] = 200
    assert foreground_box(img) == (20, 60, 50, 130)
    out = prepare_slice(img, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    # the 80-px-wide head fills the width but for the small margin
    cols = np.flatnonzero((out > 100).any(axis=0))
    assert cols[0] <= 4 and cols[-1] >= 59


def test_maps_return_to_the_original_pixels() -> None:
    from mrimaster.data.images import prepare_slice, slice_geometry, to_original_grid

    gray = np.zeros((300, 200), np.uint8)
    gray[50:250, 40:160] = 120  # the "head": a 200 x 120 box
    gray[100:110, 60:70] = 255  # a bright spot inside it
    size = 128
    model_input = prepare_slice(gray, size).astype(np.float32)
    back = to_original_grid(model_input, slice_geometry(gray), gray.shape)
    assert back.shape == gray.shape
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert 98 <= y <= 112 and 58 <= x <= 72  # the spot's maximum lands on the spot
    assert back[:45].max() == 0 and back[:, :35].max() == 0  # nothing outside the head box
