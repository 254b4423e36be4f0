"""Run an exported classifier with ONNX Runtime or OpenVINO, without importing torch.

A model folder exported by :mod:`mrimaster.inference.onnx_export` holds, beside ``model.pt``,
one graph file and one trust file per validated *variant*
(:data:`mrimaster.inference.graph.VARIANTS`; the graphs are compiled by
:func:`mrimaster.inference.graph.open_graph`):

- the graph (``model.onnx``, ``model.int8.onnx``, ``model.openvino-int8.xml`` with its
  ``.bin``): input ``image`` ``(N, 3, S, S)`` float32
  (see :func:`mrimaster.data.images.model_input`), outputs ``logits`` ``(N, C)`` and
  ``features`` ``(N, D)`` (the head's input);
- the trust file (``*.npz``): what the trust decision needs, fitted for *that* variant (a
  reduced-precision variant has its own temperature, referral threshold and feature
  distance): ``meta`` (JSON: classes, image size, temperature, referral, OOD thresholds, the
  SHA-256 of ``model.pt`` and of the graph it belongs to, and the export check), the feature
  distance's arrays and the head's weights (for MC dropout).

A variant is only written when its validation check held, so a trust file on disk means
"validated for this model".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.images import model_input
from mrimaster.device import inference_device
from mrimaster.errors import ModelError
from mrimaster.inference.graph import (
    ENGINE_OF_RUNTIME,
    FEATURE_MAP,
    VARIANTS,
    Graph,
    engine_problem,
    open_graph,
)
from mrimaster.inference.runtime import RUNTIMES, ClassifierInfo, Head
from mrimaster.models.paths import file_sha256

FORMAT = "mrimaster-onnx/1"


class GraphRuntime:
    """:class:`~mrimaster.inference.runtime.Runtime` over an exported classifier graph."""

    def __init__(self, path: Path, head: Head, variant: str) -> None:
        self.graph = open_graph(path, variant)
        self._path = path
        self._head = head
        self.name = variant
        self._mapped: Graph | None = None

    def feature_map(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S, S)`` uint8 slices -> ``((N, C) float32 logits, (N, D, h, w) float32
        feature map)`` from one pass of this variant (the graph with its pooled feature map as
        an extra output, compiled on first use).

        Raises:
            ModelError: the graph does not pool a feature map into its features.
        """
        if self._mapped is None:
            self._mapped = open_graph(self._path, self.name, feature_map=True)
        out = self._mapped(model_input(images))
        return (np.asarray(out["logits"], np.float32),
                np.asarray(out[FEATURE_MAP], np.float32))

    def forward(self, images: np.ndarray, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray]:
        logits, feats = [], []
        for start in range(0, len(images), batch_size):
            out = self.graph(model_input(images[start:start + batch_size]))
            logits.append(np.asarray(out["logits"], np.float32))
            feats.append(np.asarray(out["features"], np.float32))
        if not logits:
            return (np.zeros((0, self._head.weight.shape[0]), np.float32),
                    np.zeros((0, self._head.weight.shape[1]), np.float32))
        return np.concatenate(logits), np.concatenate(feats)

    def head(self) -> Head:
        return self._head


def make_runtime(folder: Path, name: str, head: Head) -> GraphRuntime:
    """The runtime of variant ``name`` on ``folder``'s graph file."""
    return GraphRuntime(folder / VARIANTS[name].graph, head, name)


@dataclass
class OnnxClassifier(ClassifierInfo):
    """A classifier running its exported graph (keyword ``runtime``), without torch."""

    runtime: GraphRuntime = field(kw_only=True)


def variant_problem(folder: Path, name: str) -> str | None:
    """Why variant ``name`` of ``folder`` cannot be used here (``None`` when it can).

    Checks that its engine is installed (and bf16 is supported by the CPU), both files
    exist, and the trust file belongs to the folder's current ``model.pt`` and graph (SHA-256
    recorded at export).
    """
    problem = engine_problem(name)
    if problem:
        return problem
    variant = VARIANTS[name]
    graph, trust = folder / variant.graph, folder / variant.trust
    if not graph.is_file() or not trust.is_file():
        return f"{folder} has no validated {name} export ({variant.graph}, {variant.trust})"
    return export_mismatch(graph, read_meta(trust), variant.trust)


def graph_files(graph: Path) -> list[Path]:
    """The files of a graph: itself, and for an OpenVINO IR (``.xml``) its weights (``.bin``)."""
    return [graph, graph.with_suffix(".bin")] if graph.suffix == ".xml" else [graph]


def graph_sha256(graph: Path) -> str:
    """SHA-256 of a graph file; for an OpenVINO IR, of its two files' SHA-256 in order."""
    files = graph_files(graph)
    if len(files) == 1:
        return file_sha256(graph)
    missing = [f for f in files if not f.is_file()]
    if missing:
        return f"missing {missing[0].name}"
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()


def export_mismatch(graph: Path, meta: dict[str, Any], record: str) -> str | None:
    """Why the record ``meta`` (file name ``record``) does not belong to ``graph`` and the
    ``model.pt`` beside it (SHA-256 of both, written at export); ``None`` when it does."""
    if meta.get("graph_sha256") != graph_sha256(graph):
        return f"{graph} is not the graph its {record} describes"
    pt = graph.parent / "model.pt"
    if pt.is_file() and meta.get("source_sha256") != file_sha256(pt):
        return f"{graph} was exported from another model.pt than the one beside it"
    return None


def choose_variant(folder: Path, runtime: str, device: str, candidates: tuple[str, ...],
                   problem: Callable[[Path, str], str | None]) -> tuple[str | None, str]:
    """Where and how a model of ``folder`` runs: ``(variant, device)``.

    ``variant`` is the first of ``candidates`` allowed for ``runtime`` (see
    :data:`ENGINE_OF_RUNTIME`) that ``problem`` finds usable, or ``None`` for PyTorch; ``device``
    is ``cuda`` only for PyTorch on a GPU (the exported engines run on the CPU here).

    Raises:
        ModelError: unknown ``runtime``; a GPU asked for with an engine that runs on the CPU;
            or ``runtime`` names an engine (``onnx``, ``openvino``) and no variant of it is
            usable (the message lists why for each).
    """
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}", f"choose one of: {', '.join(RUNTIMES)}")
    where = inference_device(device)
    if where != "cpu":
        if runtime in ("onnx", "openvino"):
            if device == "cuda":
                raise ModelError(f"the {runtime} engine runs on the CPU in this project",
                                 "use --runtime torch (or auto) with --device cuda")
        else:
            return None, where
    problems = []
    for name in [c for c in candidates if c in ENGINE_OF_RUNTIME.get(runtime, ())]:
        why = problem(folder, name)
        if why is None:
            return name, "cpu"
        problems.append(f"{name}: {why}")
    if runtime not in ("auto", "torch"):
        raise ModelError(f"cannot run {folder} with {runtime}: " + "; ".join(problems),
                         "install the engine with `pip install mrimaster[fast]` and export the "
                         "model again, or use --runtime torch")
    return None, "cpu"


def read_meta(trust_path: Path) -> dict[str, Any]:
    """The ``meta`` record of a ``model.onnx.npz``."""
    try:
        with np.load(trust_path, allow_pickle=False) as blob:
            meta = json.loads(str(blob["meta"]))
    except Exception as exc:  # zip, key and JSON errors all mean a damaged file
        raise ModelError(f"{trust_path} is not a readable ONNX trust file "
                         f"({type(exc).__name__})", "export the model again") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{trust_path} is not an MRIMaster ONNX trust file",
                         "export the model again")
    return meta


def load_variant(folder: Path, name: str) -> OnnxClassifier:
    """Load variant ``name`` of ``folder`` (check it first with :func:`variant_problem`)."""
    trust_path = folder / VARIANTS[name].trust
    meta = read_meta(trust_path)
    with np.load(trust_path, allow_pickle=False) as blob:
        arrays = {k: blob[k].astype(np.float32) for k in blob.files if k != "meta"}
    head = Head(arrays["head_weight"], arrays["head_bias"], float(meta["head_dropout"]))
    ood = None
    if meta.get("ood"):
        ood = {"distance": {"means": arrays["ood_means"], "basis": arrays["ood_basis"],
                            "variances": arrays["ood_variances"],
                            "rest_variance": meta["ood"]["rest_variance"]},
               "refer_above": meta["ood"]["refer_above"],
               "reject_above": meta["ood"]["reject_above"]}
    return OnnxClassifier(meta["arch"], list(meta["classes"]), int(meta["image_size"]),
                          float(meta["temperature"]), meta.get("referral"),
                          {"variant": name, "check": meta.get("check")}, ood,
                          runtime=make_runtime(folder, name, head))


def write_trust_file(path: Path, meta: dict[str, Any], head: Head,
                     ood: dict[str, Any] | None) -> None:
    """Write ``model.onnx.npz`` (see the module docstring)."""
    meta = dict(meta, format=FORMAT, head_dropout=head.dropout)
    arrays: dict[str, Any] = {"head_weight": head.weight.astype(np.float32),
                              "head_bias": head.bias.astype(np.float32)}
    if ood:
        dist = ood["distance"]
        meta["ood"] = {"refer_above": float(ood["refer_above"]),
                       "reject_above": float(ood["reject_above"]),
                       "rest_variance": float(dist["rest_variance"])}
        # the basis as float16 halves the file (distances move by under 1e-3 relative: at most
        # 6.7e-4 on the shipped model's validation and test images)
        arrays.update(ood_means=np.asarray(dist["means"], np.float32),
                      ood_basis=np.asarray(dist["basis"], np.float16),
                      ood_variances=np.asarray(dist["variances"], np.float32))
    else:
        meta["ood"] = None
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
