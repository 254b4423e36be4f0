"""``mrimaster predict`` on real slices exported as 16-bit PNG: the same reads as the 8-bit
files (before windowing, values over 255 were clipped, and most such slices were rejected as
not brain MRI or read as another class with status ok)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrimaster.data.images import load_grayscale
from mrimaster.inference.loading import load_for_inference
from mrimaster.inference.predict import predict_files
from mrimaster.settings import load_settings

CLASS_FOLDERS = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


@pytest.mark.realdata
@pytest.mark.parametrize("top", [1200, 4095])
def test_real_slices_as_16_bit_png_read_as_their_8_bit_files(data_root: Path, tmp_path: Path,
                                                              top: int) -> None:
    """The first three files of each class folder, each also written as a 16-bit PNG with
    values 0..``top`` (as MRI exports store them); both sets through the shipped model."""
    settings = load_settings()
    clf = load_for_inference("default", settings.models_dir, "auto", "cpu", settings.cache_dir)
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    eight.mkdir()
    sixteen.mkdir()
    for folder in CLASS_FOLDERS:
        for path in sorted((data_root / "sartaj-training" / folder).iterdir())[:3]:
            gray = load_grayscale(path)
            name = f"{folder}-{path.stem}.png"
            Image.fromarray(gray).save(eight / name)
            values = (gray.astype(np.float64) / 255 * top).round().astype(np.uint16)
            Image.fromarray(values).save(sixteen / name)
    rows8, skipped8 = predict_files(clf, [eight])
    rows16, skipped16 = predict_files(clf, [sixteen])
    assert not skipped8 and not skipped16 and len(rows8) == len(rows16) == 12
    by_name = {Path(r["path"]).name: r for r in rows8}
    assert not [r for r in rows16 if r["status"] == "reject"], rows16
    same = [r for r in rows16 if r["prediction"] == by_name[Path(r["path"]).name]["prediction"]]
    assert len(same) >= 10, [(r["path"], r["prediction"]) for r in rows16]
