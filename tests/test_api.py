"""The Python API on the shipped models: typed results with the trust fields, same answers
in every runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mrimaster.api import Classifier, Prediction, Segmenter
from tests.segmentation.synthetic import write_case

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def images(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("api")
    picked = sorted((data_root / "sartaj-training" / "glioma_tumor").glob("*.jpg"))[:2]
    photo = folder / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(photo)
    return [*picked, photo]


def test_predict_returns_typed_results_with_trust_fields(images: list[Path]) -> None:
    clf = Classifier.load("default")
    results = clf.predict(images)
    assert [Path(p.path) for p in results] == images
    assert all(isinstance(p, Prediction) for p in results)
    photo = results[-1]
    assert photo.status == "reject" and photo.label is None and photo.probabilities is None
    assert photo.referred and photo.reason
    assert photo.brain_mri_p is not None and 0 <= photo.brain_mri_p <= 1
    for p in results[:-1]:
        assert p.brain_mri_p is not None and p.brain_mri_p > photo.brain_mri_p
        assert p.probabilities is not None and p.label in clf.classes
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert p.confidence == pytest.approx(max(p.probabilities.values()))


@pytest.mark.parametrize("runtime", ["auto", "onnx", "openvino"])
def test_every_runtime_answers_like_torch(images: list[Path], runtime: str) -> None:
    """fp32 variants give PyTorch's labels; the int8 one may differ only on a referred image
    (here the second: probabilities 0.44 / 0.43 between two classes)."""
    from mrimaster.inference.graph import VARIANTS

    fast, torch_clf = (Classifier.load("default", runtime=runtime),
                       Classifier.load("default", runtime="torch"))
    assert torch_clf.runtime == "torch" and fast.runtime in VARIANTS
    ours, ref = fast.predict(images), torch_clf.predict(images)
    assert [p.status for p in ours] == [p.status for p in ref]
    exact = VARIANTS[fast.runtime].precision == "fp32"
    for p, q in zip(ours, ref, strict=True):
        if exact or q.status == "ok":
            assert p.label == q.label, (fast.runtime, p.path)


def test_explain_writes_overlays(images: list[Path], tmp_path: Path) -> None:
    summaries = Classifier.load("default").explain(images[:1], tmp_path)
    assert len(summaries) == 1
    assert list(tmp_path.glob(f"*{images[0].stem}_overlay.png"))


def test_explain_shows_no_class_for_what_predict_rejects(images: list[Path],
                                                         tmp_path: Path) -> None:
    """The colour photo that predict rejects gets no class and no map (explain used to show
    one with its probability), and a file that is not an image does not stop the others."""
    clf = Classifier.load("default")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    summaries = clf.explain([images[0], images[2], text], tmp_path / "out")
    by_name = {Path(s["image"]).name: s for s in summaries}
    (rejected,) = [p for p in clf.predict([images[2]])]
    assert rejected.status == "reject"
    photo = by_name[images[2].name]
    assert photo["status"] == "reject" and photo["class"] is None and not photo["files"]
    assert photo["reason"] == rejected.reason
    assert by_name["notes.png"]["status"] == "skipped"
    assert by_name[images[0].name]["class"] is not None
    assert not list((tmp_path / "out").glob("*photo*"))
    assert json.loads((tmp_path / "out" / "explain.json").read_text()) == summaries


@pytest.mark.usefixtures("no_brain_mri_check")
def test_segment_a_case(tmp_path: Path) -> None:
    case = write_case(tmp_path / "case", "brats2021", seed=3)
    result = Segmenter.load("default").segment(case, tmp_path / "out")
    assert set(result.volumes_ml) == {"WT", "TC", "ET"}
    assert result.seg_path.is_file()


@pytest.mark.parametrize("given", [np.zeros((64, 64), np.uint8), Image.new("L", (64, 64)),
                                   b"\x89PNG", [np.zeros((8, 8))]],
                         ids=["array", "pil", "bytes", "list-of-arrays"])
def test_anything_but_paths_is_a_clear_error(given: Any) -> None:
    from mrimaster.errors import ConfigError

    with pytest.raises(ConfigError, match="expected file or folder paths") as err:
        Classifier.load("default").predict(given)
    assert "save the slice as a file" in str(err.value.hint)


def test_any_path_object_is_taken(images: list[Path], tmp_path: Path) -> None:
    import os
    import shutil

    shutil.copy(images[0], tmp_path / images[0].name)
    entries = list(os.scandir(tmp_path))  # os.DirEntry: a path object that is not a Path
    (result,) = Classifier.load("default").predict(entries)
    assert Path(result.path).name == images[0].name
