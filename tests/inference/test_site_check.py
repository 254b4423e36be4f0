"""The per-machine check of an exported variant: its rule, its cache, and a perturbed check
set on the shipped model making ``auto`` fall back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrimaster.inference.loading import load_for_inference
from mrimaster.inference.site_check import (
    CACHE_FILE,
    CHECK_FILE,
    check_here,
    choose_check_slices,
    compare_logits,
    read_check_set,
    site_signature,
    write_check_set,
)
from mrimaster.settings import SHIPPED_MODELS

REF = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], np.float32)


@pytest.mark.parametrize(("logits", "least", "ok"), [
    (REF, 1.0, True),
    (REF + 0.3, 1.0, True),  # a shift of every logit: differences 0.3 <= 0.5
    (REF + np.float32([0.0, 0.0, 0.0, 0.6]), 1.0, False),  # 0.6 over the limit
    (REF + np.float32([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0.45, 0]]), 1.0, True),
    (REF + np.float32([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0.49, -0.49]]), 1.0, True),
])
def test_the_rule_on_logits(logits: np.ndarray, least: float, ok: bool) -> None:
    result = compare_logits(logits, REF, (least, 0.5), "sig")
    assert result.ok is ok and result.n == 3
    assert result.max_logit_difference == pytest.approx(float(np.abs(logits - REF).max()))


def test_a_new_flip_fails_a_flip_the_export_had_does_not() -> None:
    flipped = REF.copy()
    flipped[2] = [0.0, 0.0, 0.6, 0.5]  # class 2 wins on the last slice
    assert compare_logits(flipped, REF, (1.0, 1.0), "sig").ok is False
    result = compare_logits(flipped, REF, (2 / 3, 1.0), "sig")
    assert result.ok and result.agreement == pytest.approx(2 / 3)
    assert "passed" in result.describe() and "0.667" in result.describe()


def test_check_slices_are_spread_and_unique() -> None:
    assert list(choose_check_slices(5, 32)) == [0, 1, 2, 3, 4]
    idx = choose_check_slices(358, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 357 and np.all(np.diff(idx) > 0)


def test_the_check_is_cached_per_graph_and_machine(tmp_path: Path) -> None:
    images = np.zeros((3, 8, 8), np.uint8)
    write_check_set(tmp_path, images, REF, {"v": {"agreement": 1.0,
                                                   "max_logit_difference": 0.1}}, "abc")
    calls: list[int] = []

    def forward(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return REF + 0.05

    cache = tmp_path / "cache"
    first = check_here(tmp_path, "v", "numpy", "int8", "graph-1", forward, cache)
    assert not isinstance(first, str) and first.ok and not first.cached and calls == [3]
    again = check_here(tmp_path, "v", "numpy", "int8", "graph-1", forward, cache)
    assert not isinstance(again, str) and again.cached and calls == [3]
    assert again.agreement == first.agreement and again.signature == site_signature("numpy")
    other = check_here(tmp_path, "v", "numpy", "int8", "graph-2", forward, cache)  # new graph
    assert not isinstance(other, str) and not other.cached and calls == [3, 3]
    assert len(json.loads((cache / CACHE_FILE).read_text())) == 2
    assert "no record of w" in str(check_here(tmp_path, "w", "numpy", "int8", "g", forward,
                                              cache))
    (tmp_path / CHECK_FILE).unlink()
    assert "no check set" in str(check_here(tmp_path, "v", "numpy", "int8", "g", forward, None))


def _copy_shipped(folder: Path) -> Path:
    """The shipped default model as links, all but its check set."""
    folder.mkdir()
    for f in (SHIPPED_MODELS / "default").iterdir():
        if f.name != CHECK_FILE:
            (folder / f.name).symlink_to(f.resolve())
    return folder


def test_the_shipped_model_checks_its_variant_here(tmp_path: Path) -> None:
    model = load_for_inference("default", SHIPPED_MODELS, "auto", cache_dir=tmp_path)
    choice = model.meta["runtime_choice"]
    assert choice["runtime"] == model.runtime.name
    if choice["runtime"] != "torch":
        assert "passed its check on this CPU" in choice["why"]
    for line in choice["skipped"]:  # a variant not used says why
        assert line.split(":")[0] in ("openvino-int8", "openvino-bf16", "onnx-int8",
                                      "openvino-fp32", "onnx-fp32")


def test_a_perturbed_check_makes_auto_fall_back(tmp_path: Path) -> None:
    shipped = read_check_set(SHIPPED_MODELS / "default")
    assert shipped is not None
    images, logits, meta = shipped
    # 1. the int8 variant's accepted difference made tiny: it fails here, the next one runs
    folder = _copy_shipped(tmp_path / "tight")
    tight = json.loads(json.dumps(meta["accepted"]))
    tight["openvino-int8"]["max_logit_difference"] = 1e-7
    write_check_set(folder, images, logits, tight, meta["source_sha256"])
    model = load_for_inference(folder, Path("."), "auto", cache_dir=tmp_path / "c1")
    choice = model.meta["runtime_choice"]
    assert choice["runtime"] == "openvino-fp32", choice
    assert any(s.startswith("openvino-int8: failed its check on this CPU")
               for s in choice["skipped"]), choice
    # 2. the recorded fp32 answer of one slice changed: no exported variant agrees, PyTorch runs
    folder = _copy_shipped(tmp_path / "flipped")
    wrong = logits.copy()
    wrong[0] = wrong[0, ::-1] if wrong[0].argmax() != 1 else np.roll(wrong[0], 1)
    assert wrong[0].argmax() != logits[0].argmax()
    write_check_set(folder, images, wrong, meta["accepted"], meta["source_sha256"])
    model = load_for_inference(folder, Path("."), "auto", cache_dir=tmp_path / "c2")
    choice = model.meta["runtime_choice"]
    assert model.runtime.name == "torch" and choice["why"] == "no exported variant can run here"
    failed = [s for s in choice["skipped"] if "failed its check" in s]
    assert {s.split(":")[0] for s in failed} == set(meta["accepted"]), choice
    # 3. no check set: the fp32 graphs run (checked at export), int8 is not used
    folder = _copy_shipped(tmp_path / "none")
    model = load_for_inference(folder, Path("."), "auto", cache_dir=None)
    choice = model.meta["runtime_choice"]
    assert choice["runtime"] == "openvino-fp32"
    assert any(s.startswith("openvino-int8:") and "no check set" in s for s in choice["skipped"])
