"""``open_graph(..., parallel=True)``: a batch split between OpenVINO's CPU streams gives the
numbers one request gives for the same batch (two patches or more), even and uneven, call
after call; a single patch the numbers it gets within a larger batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mrimaster.inference.graph import engine_problem, open_graph
from mrimaster.settings import load_settings


@pytest.mark.parametrize("variant", ["openvino-fp32", "openvino-bf16"])
def test_split_batches_equal_one_request(variant: str) -> None:
    if variant == "openvino-bf16" and engine_problem(variant):
        pytest.skip(f"this CPU cannot run {variant}: {engine_problem(variant)}")
    graph = load_settings().models_dir / "seg-default" / "model.onnx"
    serial, split = open_graph(graph, variant), open_graph(graph, variant, parallel=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 96, 96, 96)).astype(np.float32)
    want = serial(x)["logits"]
    assert want.shape == (3, 3, 96, 96, 96)
    got = split(x)["logits"]
    np.testing.assert_array_equal(got, want)
    # a smaller batch next (the kept output arrays are reused), then one patch
    np.testing.assert_array_equal(split(x[1:3])["logits"], serial(x[1:3])["logits"])
    np.testing.assert_array_equal(split(x[2:])["logits"], want[2:])  # one stream, one patch
    assert split.streams >= 1 and not hasattr(serial, "streams")  # type: ignore[attr-defined]
    # a non-contiguous batch is read right
    np.testing.assert_array_equal(split(x[::2])["logits"], serial(x[::2])["logits"])


def test_an_output_with_two_names_is_one_array_under_both(tmp_path: Path) -> None:
    """A tiny OpenVINO graph, ``image * 2`` with its output named ``logits`` and ``doubled``."""
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter(ov.PartialShape([-1, 2, 3]), ov.Type.f32, name="image")
    image.output(0).get_tensor().set_names({"image"})
    doubled = ops.multiply(image, ops.constant(np.float32(2.0)))
    model = ov.Model([doubled], [image], "double")
    model.outputs[0].get_tensor().set_names({"logits", "doubled"})
    path = tmp_path / "double.xml"
    ov.save_model(model, str(path))
    graph = open_graph(path, "openvino-fp32", parallel=True)
    x = np.arange(5 * 6, dtype=np.float32).reshape(5, 2, 3)
    for batch in (x, x[:1], x[1:4]):
        out = graph(batch)
        np.testing.assert_array_equal(out["logits"], 2 * batch)
        np.testing.assert_array_equal(out["doubled"], 2 * batch)
