"""``open_graph(..., parallel=True)``: a batch split between OpenVINO's CPU streams gives the
numbers one request gives, for even and uneven batches, call after call."""

from __future__ import annotations

import numpy as np
import pytest

from mrimaster.inference.onnx_runtime import engine_problem, open_graph
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
    np.testing.assert_array_equal(split(x[2:])["logits"], want[2:])
    # a non-contiguous batch is read right
    np.testing.assert_array_equal(split(x[::2])["logits"], serial(x[::2])["logits"])
