"""Exported graphs and the engines that run them: the variants (engine and precision) an
exported network may have (:data:`VARIANTS`), whether this machine can run one
(:func:`engine_problem`), and compiling a graph file into a callable (:func:`open_graph`:
ONNX Runtime, or OpenVINO on the CPU, optionally split between OpenVINO's CPU streams, or
with the feature map behind the pooled features as an extra output). Used by the classifier's
and the segmenter's exported runtimes alike; imports no torch and no other MRIMaster runtime
module.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.device import cpu_has_bf16
from mrimaster.errors import ModelError


@dataclass(frozen=True)
class Variant:
    """One way to run the exported graph.

    Attributes:
        engine: Python package that runs it (``onnxruntime`` or ``openvino``).
        precision: ``fp32``, ``int8`` (static, per-channel weights: ONNX Runtime QDQ, or
            OpenVINO IR quantised with NNCF) or ``bf16`` (OpenVINO's inference precision on
            CPUs with bf16 instructions).
        graph: Graph file in the model folder (an OpenVINO ``.xml`` has its weights in the
            ``.bin`` beside it).
        trust: Trust file in the model folder.
    """

    engine: str
    precision: str
    graph: str
    trust: str


VARIANTS: dict[str, Variant] = {
    "openvino-int8": Variant("openvino", "int8", "model.openvino-int8.xml",
                             "model.openvino-int8.npz"),
    "openvino-bf16": Variant("openvino", "bf16", "model.onnx", "model.openvino-bf16.npz"),
    "onnx-int8": Variant("onnxruntime", "int8", "model.int8.onnx", "model.int8.onnx.npz"),
    "openvino-fp32": Variant("openvino", "fp32", "model.onnx", "model.openvino-fp32.npz"),
    "onnx-fp32": Variant("onnxruntime", "fp32", "model.onnx", "model.onnx.npz"),
}
"""Variants from the fastest to the slowest on a CPU (see ``benchmarks/bench_runtime.py``)."""

ENGINE_OF_RUNTIME: dict[str, tuple[str, ...]] = {
    "auto": tuple(VARIANTS), "onnx": ("onnx-int8", "onnx-fp32"),
    "openvino": ("openvino-int8", "openvino-bf16", "openvino-fp32")}
"""Variants each ``--runtime`` value may use, in order of preference (``torch`` uses none)."""


Graph = Callable[[np.ndarray], dict[str, np.ndarray]]
"""A compiled graph: input ``image`` -> every output by name."""


FEATURE_MAP = "feature_map"
"""The extra output :func:`open_graph` adds with ``feature_map=True``: ``(N, D, h, w)``, the
activations the network pools into ``features`` (what CAM weighs:
:mod:`mrimaster.explain.forward_cam`)."""

_PASS_THROUGH = {"Reshape", "Flatten", "Squeeze"}
_POOLS = {"ReduceMean", "GlobalAveragePool", "AvgPool"}


def _pooled_openvino(model: Any) -> Any:
    """The OpenVINO output that the pooling behind ``features`` averages (through reshapes)."""
    output = next((o for o in model.outputs if "features" in o.get_names()), None)
    node: Any = output.get_node() if output is not None else None
    for _ in range(8 if node is not None else 0):
        node = node.input_value(0).get_node()
        if node.get_type_name() in _POOLS:
            return node.input_value(0)
        if node.get_type_name() not in _PASS_THROUGH:
            break
    raise ModelError("the exported graph does not pool a feature map into its features",
                     "the heatmap is made in PyTorch instead")


def _pooled_onnx(graph: Any) -> str:
    """The name of the ONNX tensor that the pooling behind ``features`` averages."""
    producer = {out: node for node in graph.node for out in node.output}
    name = "features"
    for _ in range(8):
        node = producer.get(name)
        if node is None:
            break
        if node.op_type in _POOLS:
            return str(node.input[0])
        if node.op_type not in _PASS_THROUGH:
            break
        name = node.input[0]
    raise ModelError("the exported graph does not pool a feature map into its features",
                     "the heatmap is made in PyTorch instead")


def _split_between(requests: list[Any], names: list[tuple[Any, str]]) -> Graph:
    """A graph that splits each batch between OpenVINO ``requests`` run at once (see
    :func:`open_graph`'s ``parallel``).

    Outputs whose shape is fixed but for the batch are written by the requests straight into
    arrays this graph keeps (no copy: fresh arrays for a batch of 96^3 patches cost about
    50 ms a call in page faults, more than the copy itself), so what a call returns is
    overwritten by the next call: a caller keeps a copy of what it needs beyond that. The kept
    arrays live as long as the graph (for the segmenter: its batch of logits, about 42 MB).
    An output with several names is one array under each name.
    """
    import openvino as ov

    outputs = list(dict.fromkeys(out for out, _ in names))  # each output once, in order
    fixed = {k: tuple(out.get_partial_shape().get_min_shape())[1:]
             for k, out in enumerate(outputs)
             if out.get_partial_shape()[1:].is_static and out.get_element_type() == ov.Type.f32}
    index = {name: outputs.index(out) for out, name in names}
    kept: dict[int, np.ndarray] = {}

    def run_split(x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        rows = [slice(int(p[0]), int(p[-1]) + 1)
                for p in np.array_split(np.arange(len(x)), len(requests)) if len(p)]
        for k, shape in fixed.items():
            if k not in kept or len(kept[k]) < len(x):
                kept[k] = np.empty((len(x), *shape), np.float32)
        started = []
        try:
            for request, part in zip(requests, rows, strict=False):
                for k in fixed:
                    request.set_tensor(outputs[k], ov.Tensor(kept[k][part], shared_memory=True))
                # a slice of whole samples of a C-contiguous batch is C-contiguous: read in
                # place
                request.start_async({"image": x[part]}, share_inputs=True)
                started.append(request)
        finally:  # never leave a request running into the next call
            for request in started:
                request.wait()
        merged = {k: kept[k][:len(x)] if k in fixed else
                  np.concatenate([np.array(r.get_tensor(outputs[k]).data) for r in started])
                  for k in range(len(outputs))}
        return {name: merged[k] for name, k in index.items()}

    run_split.streams = len(requests)  # type: ignore[attr-defined]
    return run_split


def open_graph(path: Path, variant: str, feature_map: bool = False,
               parallel: bool = False) -> Graph:
    """Compile ``path`` for variant ``name``'s engine and precision, on the CPU.

    With ``feature_map`` the graph also returns :data:`FEATURE_MAP` (the tensor the global
    average pooling behind ``features`` reads, added as an output when compiling; the file is
    unchanged).

    With ``parallel`` (OpenVINO only; for callers that pass batches of several large inputs,
    such as the segmenter's sliding window) the graph is compiled for throughput: OpenVINO's
    CPU streams (one per request it finds best, 2 on 2 cores), each call's batch split between
    them and run at once (the graph's ``streams`` attribute says how many). Its outputs for
    batches of one to four patches equal one request's for the same patches in a larger
    batch to the last bit (measured on 2 cores, fp32 and bf16:
    ``tests/inference/test_parallel_graph.py``); only the serial graph's batch of one rounds
    differently from its larger batches (bf16 logits by up to 0.07). 12 patches of 96^3, 4 a
    call, took 0.86 s against 0.98 s with one request (median of 6, 2 cores, bf16). A batch
    of one gains nothing, so the 2D read stays serial. Such a graph keeps its output arrays
    between calls (see :func:`_split_between`), and like any compiled graph here it is not for
    two threads at once.

    Raises:
        ModelError: ``feature_map`` asked of a graph that does not pool a feature map.
    """
    spec = VARIANTS[variant]
    if spec.engine == "openvino":
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        own = len(model.outputs)
        if feature_map:
            model.add_outputs([_pooled_openvino(model)])
        # int8 IR: what NNCF left unquantised runs in fp32, not in the CPU's bf16
        hint = {"bf16": "bf16", "fp32": "f32", "int8": "f32"}[spec.precision]
        config = {"INFERENCE_PRECISION_HINT": hint}
        if parallel:
            config["PERFORMANCE_HINT"] = "THROUGHPUT"
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        names = [(out, name) for out in compiled.outputs[:own] for name in out.get_names()]
        names += [(out, FEATURE_MAP) for out in compiled.outputs[own:]]
        if parallel:
            count = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            requests = [request] + [compiled.create_infer_request() for _ in range(count - 1)]
            return _split_between(requests, names)

        def run_openvino(x: np.ndarray) -> dict[str, np.ndarray]:
            # share_outputs=False (the default): the results are copies already;
            # share_inputs: a C-contiguous float32 batch is read in place, not copied (the
            # call is synchronous, so the caller may refill it afterwards)
            result = request.infer({"image": x}, share_inputs=True, share_outputs=False)
            return {name: np.asarray(result[out]) for out, name in names}

        return run_openvino
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    source: str | bytes = str(path)
    extra: list[str] = []
    if feature_map:
        import onnx

        proto = onnx.load(str(path))
        extra = [_pooled_onnx(proto.graph)]
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(extra[0]))
        source = proto.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    output_names = [out.name for out in session.get_outputs()]
    keys = [FEATURE_MAP if name in extra else name for name in output_names]

    def run_onnxruntime(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(keys, session.run(output_names, {"image": x}), strict=True))

    return run_onnxruntime


def engine_problem(name: str) -> str | None:
    """Why variant ``name`` cannot run on this machine at all (``None`` when it can)."""
    variant = VARIANTS[name]
    if importlib.util.find_spec(variant.engine) is None:
        return f"{variant.engine} is not installed"
    if variant.precision == "bf16" and not cpu_has_bf16():
        return "this CPU has no bf16 instructions"
    return None
