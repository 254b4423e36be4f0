"""Export a calibrated classifier to ONNX and validate each faster variant before keeping it.

Steps (:func:`export_variants`), all on the run's own split:

1. **Graph**: the network with two outputs, ``logits`` and ``features`` (the head's input),
   exported with ``torch.onnx.export`` (opset 18, dynamic batch). Weights are stored as float16
   (exactly the values of ``model.pt``, which stores float16) and cast to float32 inside the
   graph, which both engines fold once at load: the file stays under the 10 MB limit.
2. **Check** of every variant (:data:`mrimaster.inference.graph.VARIANTS`) against the
   PyTorch model: top-1 agreement, largest logit difference, macro F1 on the validation part
   (decides) and the test part (reported only).
3. **Keep rule**: an fp32 variant must match PyTorch (logits within :data:`FP32_TOLERANCE`),
   else the export fails; it uses the PyTorch model's trust rule unchanged. A
   reduced-precision variant (``onnx-int8``: static QDQ quantisation, per-channel weights,
   calibrated on training images; ``openvino-int8``: NNCF quantisation with bias correction,
   the first convolutions in fp32; ``openvino-bf16``) is kept only when its
   validation top-1 agreement is at least :data:`MIN_AGREEMENT` and its macro F1 is within
   :data:`MAX_F1_DROP` of PyTorch's; its temperature, uncertainty threshold and feature
   distance are then refitted on its own outputs (:func:`mrimaster.training.fit_trust.fit_trust`)
   and the out-of-distribution probes (:func:`mrimaster.training.checks.check_ood`) are run
   through it as loaded from disk.
4. **Check set** (``check.npz``, :mod:`mrimaster.inference.site_check`): a few validation
   slices with PyTorch's fp32 logits and the largest logit difference each kept variant had,
   so a variant is checked again on each machine that loads it.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mrimaster.data.images import model_input
from mrimaster.errors import ModelError
from mrimaster.evaluation.metrics import classification_metrics
from mrimaster.inference.forward import head_of
from mrimaster.inference.graph import VARIANTS, engine_problem
from mrimaster.inference.onnx_runtime import (
    graph_files,
    graph_sha256,
    load_variant,
    make_runtime,
    write_trust_file,
)
from mrimaster.inference.runtime import Head, Runtime, softmax
from mrimaster.inference.site_check import (
    CHECK_FILE,
    FP32_TOLERANCE,
    MIN_AGREEMENT,
    SLACK,
    choose_check_slices,
    write_check_set,
)
from mrimaster.models.checkpoint import Classifier
from mrimaster.models.paths import file_sha256
from mrimaster.settings import Settings
from mrimaster.training.fit_trust import CalibrateConfig, CalibrationData, fit_trust

log = logging.getLogger(__name__)

OPSET = 18
MAX_F1_DROP = 0.005
"""Largest validation macro-F1 loss (0.5 point) for a reduced-precision variant."""
INT8_CALIBRATION_IMAGES = 256
OPENVINO_INT8_CALIBRATION_IMAGES = 512
FP32_LEADING_CONVOLUTIONS = 2
"""Convolutions (from the input) that the OpenVINO int8 variant keeps in fp32."""


class FeatureNet(nn.Module):
    """``net`` with two outputs: logits and the penultimate features (the head's input)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.body = copy.deepcopy(net).eval()
        names = [n for n, m in self.body.named_modules() if isinstance(m, nn.Linear)]
        parent, _, attr = names[-1].rpartition(".")
        self.head = getattr(self.body.get_submodule(parent) if parent else self.body, attr)
        setattr(self.body.get_submodule(parent) if parent else self.body, attr, nn.Identity())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x).flatten(1)
        return self.head(features), features


def export_graph(net: nn.Module, path: Path, image_size: int) -> None:
    """Write ``net`` as an fp32 ONNX graph (float32 initializers) to ``path``."""
    wrapped = FeatureNet(net)
    example = torch.zeros(2, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(wrapped, (example,), str(path), opset_version=OPSET,
                          input_names=["image"], output_names=["logits", "features"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"},
                                        "features": {0: "batch"}}, dynamo=False)


def half_storage(src: Path, dst: Path, min_size: int = 1024) -> None:
    """Store float32 initializers of ``src`` with at least ``min_size`` values as float16,
    each followed by a ``Cast`` back to float32, in ``dst``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or values.size < min_size:
            kept.append(init)
            continue
        half = numpy_helper.from_array(values.astype(np.float16), init.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def quantize_int8(src: Path, dst: Path, images: np.ndarray) -> None:
    """Static QDQ int8 quantisation of ``src`` (fp32 initializers), per-channel weights,
    activation ranges from ``images`` (``(N, S, S)`` uint8 training slices)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": model_input(images[i:i + 32])}
                                 for i in range(0, len(images), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.WARNING)  # the quantiser logs a note per rescaled layer
        try:
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)


def quantize_openvino_int8(src: Path, dst: Path, images: np.ndarray) -> None:
    """Post-training int8 quantisation of ``src`` with NNCF into an OpenVINO IR ``dst``
    (``.xml`` and ``.bin``).

    NNCF's default (performance) scheme: symmetric per-channel int8 weights, per-tensor
    activations with ranges from ``images`` (``(N, S, S)`` uint8 training slices), then full
    bias correction: each layer's bias absorbs the mean shift its quantisation causes on those
    images, ``b' = b - E[(W_q - W) x]`` (Nagel et al. 2019, "Data-free quantization through
    weight equalization and bias correction", the bias-correction section; here the
    expectation is estimated from data rather than from BatchNorm statistics).

    The first :data:`FP32_LEADING_CONVOLUTIONS` convolutions stay fp32. The normalised input is
    a gray level on a step of about 1/255 of its range; rounding it to 256 levels of another
    step aliases the gray levels, and that alone flips 3.4% of the shipped model's validation
    answers (its logits span only about +-3.5, so many margins are small).
    """
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.convert_model(str(src))
    convolutions = [op.get_friendly_name() for op in model.get_ordered_ops()
                    if op.get_type_name() in ("Convolution", "GroupConvolution")]
    keep = nncf.IgnoredScope(names=convolutions[:FP32_LEADING_CONVOLUTIONS])
    dataset = nncf.Dataset([model_input(images[i:i + 1]) for i in range(len(images))])
    quantized = nncf.quantize(model, dataset, subset_size=len(images),
                              fast_bias_correction=False, ignored_scope=keep)
    ov.save_model(quantized, str(dst))


def int8_calibration_images(x_fit: np.ndarray, count: int = INT8_CALIBRATION_IMAGES
                            ) -> np.ndarray:
    """The training images whose activations set the int8 ranges: a seeded random sample of
    ``count`` (:data:`INT8_CALIBRATION_IMAGES` for ONNX Runtime,
    :data:`OPENVINO_INT8_CALIBRATION_IMAGES` for NNCF)."""
    pick = np.random.default_rng(0).permutation(len(x_fit))[:count]
    return x_fit[pick]


def export_problem(name: str) -> str | None:
    """Why variant ``name`` cannot be exported here: its engine cannot run (see
    :func:`~mrimaster.inference.graph.engine_problem`) or, for OpenVINO int8, NNCF is
    not installed."""
    problem = engine_problem(name)
    if problem is None and name == "openvino-int8" and importlib.util.find_spec("nncf") is None:
        problem = "nncf is not installed (pip install mrimaster[fast])"
    return problem


def compare(runtime: Runtime, ref: np.ndarray, images: np.ndarray, labels: np.ndarray,
            classes: list[str]) -> dict[str, float]:
    """Top-1 agreement, largest logit difference and both macro F1 on labelled slices.

    Args:
        ref: ``(N, C)`` PyTorch logits of ``images`` (computed once for every variant).
    """
    logits, _ = runtime.forward(images)
    f1 = classification_metrics(labels, softmax(logits), classes)["macro_f1"]
    ref_f1 = classification_metrics(labels, softmax(ref), classes)["macro_f1"]
    return {"n": int(len(labels)),
            "top1_agreement": float((logits.argmax(1) == ref.argmax(1)).mean()),
            "max_logit_difference": float(np.abs(logits - ref).max()),
            "macro_f1": float(f1), "torch_macro_f1": float(ref_f1)}


def _drop_own_graph(out_dir: Path, name: str) -> None:
    """Delete variant ``name``'s graph files unless they are the shared fp32 graph."""
    graph = VARIANTS[name].graph
    if graph != VARIANTS["onnx-fp32"].graph:
        for path in graph_files(out_dir / graph):
            path.unlink(missing_ok=True)


def _kept(name: str, val: dict[str, float]) -> tuple[bool, str]:
    if VARIANTS[name].precision == "fp32":
        return val["max_logit_difference"] <= FP32_TOLERANCE, \
            f"logits within {FP32_TOLERANCE} of PyTorch"
    ok = (val["top1_agreement"] >= MIN_AGREEMENT
          and val["torch_macro_f1"] - val["macro_f1"] <= MAX_F1_DROP)
    return ok, (f"validation top-1 agreement >= {MIN_AGREEMENT} and macro F1 within "
                f"{100 * MAX_F1_DROP:.1f} point of PyTorch")


def export_variants(clf: Classifier, model_pt: Path, out_dir: Path, data: CalibrationData
                    ) -> dict[str, Any]:
    """Write ``out_dir``'s graphs and trust files (see the module docstring).

    Args:
        clf: The calibrated classifier, as read from ``model_pt``.
        model_pt: Its file (its SHA-256 ties the export to it).
        out_dir: The model folder.
        data: The run's validation, training and test images.

    Returns:
        The export report (``onnx.json``): per variant, kept or not, why, and the checks.

    Raises:
        ModelError: the fp32 graph does not reproduce PyTorch.
    """
    source = file_sha256(model_pt)
    head = head_of(clf.net)
    torch_val = clf.runtime.forward(data.x_val)[0]
    torch_test = clf.runtime.forward(data.x_test)[0]
    report: dict[str, Any] = {"opset": OPSET, "source_sha256": source, "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_graph(clf.net, fp32, clf.image_size)
        half_storage(fp32, out_dir / VARIANTS["onnx-fp32"].graph)
        if export_problem("onnx-int8") is None:
            quantize_int8(fp32, out_dir / VARIANTS["onnx-int8"].graph,
                          int8_calibration_images(data.x_fit))
        if export_problem("openvino-int8") is None:
            log.info("quantising for OpenVINO int8 with NNCF (bias correction: a minute or two)")
            quantize_openvino_int8(fp32, out_dir / VARIANTS["openvino-int8"].graph,
                                   int8_calibration_images(data.x_fit,
                                                           OPENVINO_INT8_CALIBRATION_IMAGES))
    for name, variant in VARIANTS.items():
        entry: dict[str, Any] = {"engine": variant.engine, "precision": variant.precision,
                                 "graph": variant.graph}
        report["variants"][name] = entry
        trust_path = out_dir / variant.trust
        trust_path.unlink(missing_ok=True)
        missing = export_problem(name)
        if missing:
            entry.update(kept=False, why=f"not checked: {missing}")
            _drop_own_graph(out_dir, name)  # no stale graph of an earlier export
            continue
        runtime = make_runtime(out_dir, name, head)
        entry["val"] = compare(runtime, torch_val, data.x_val, data.y_val, clf.classes)
        entry["test"] = compare(runtime, torch_test, data.x_test, data.y_test, clf.classes)
        kept, rule = _kept(name, entry["val"])
        entry.update(kept=kept, rule=rule)
        if not kept and variant.precision == "fp32":
            raise ModelError(f"the exported ONNX graph does not reproduce the PyTorch model "
                             f"(logits differ by {entry['val']['max_logit_difference']:.2g})",
                             "report this with the model's architecture")
        if not kept:
            log.info("%s not kept: %s", name, entry["val"])
            _drop_own_graph(out_dir, name)
            continue
        if variant.precision == "fp32":
            temperature, referral, ood = clf.temperature, clf.referral, clf.ood
        else:
            ref = clf.referral or {}
            fit = fit_trust(runtime, clf.classes, data, CalibrateConfig(
                str(model_pt), target_error=ref.get("target_error", 0.03),
                threshold_rule=ref.get("rule", "empirical"), delta=ref.get("delta", 0.05),
                temperature_rule=ref.get("temperature_rule", "shift-aware")))
            temperature, referral, ood = fit.temperature, fit.referral, fit.ood
            entry["calibration"] = fit.report
        meta = {"arch": clf.arch, "classes": clf.classes, "image_size": clf.image_size,
                "temperature": temperature, "referral": referral, "precision": variant.precision,
                "source_sha256": source,
                "graph_sha256": graph_sha256(out_dir / variant.graph),
                "check": {"val": entry["val"], "test": entry["test"], "rule": rule}}
        write_trust_file(trust_path, meta, head, ood)
        if variant.precision != "fp32":  # its own rule: does it still refuse non-MRI inputs?
            from mrimaster.training.checks import check_ood
            from mrimaster.trust.referral import TrustRule

            loaded = load_variant(out_dir, name)
            entry["ood_probes"] = check_ood(loaded, TrustRule.of(loaded))["status"]
        log.info("%s kept: validation agreement %.4f, macro F1 %.4f (torch %.4f)", name,
                 entry["val"]["top1_agreement"], entry["val"]["macro_f1"],
                 entry["val"]["torch_macro_f1"])
    report["limits"] = {"fp32_tolerance": FP32_TOLERANCE, "min_agreement": MIN_AGREEMENT,
                        "max_f1_drop": MAX_F1_DROP}
    report["site_check"] = write_site_check(out_dir, data.x_val, torch_val, report, head)
    return report


def add_site_check(folder: Path, settings: Settings, data_dir: Path | None = None
                   ) -> dict[str, Any]:
    """Write the check set of a model folder exported before check sets existed: PyTorch's
    logits of its validation slices (from the folder's ``config.yaml`` and ``split.csv``) and
    the variants its ``onnx.json`` kept; ``onnx.json`` records it.

    Raises:
        ModelError: no ``onnx.json`` or ``model.pt`` in ``folder``.
        DataError: the split's images cannot be read.
    """
    import json

    from mrimaster.models.checkpoint import load_classifier
    from mrimaster.runs.data_roots import dataset_dir
    from mrimaster.training.data import load_split_data
    from mrimaster.training.fit_trust import CalibrateConfig, train_config_of

    onnx_json, model_pt = folder / "onnx.json", folder / "model.pt"
    if not onnx_json.is_file() or not model_pt.is_file():
        raise ModelError(f"{folder} has no onnx.json or model.pt",
                         "give an exported model folder (mrimaster models export)")
    report = json.loads(onnx_json.read_text())
    if report.get("source_sha256") != file_sha256(model_pt):
        raise ModelError(f"{onnx_json} describes another model.pt", "export the model again")
    train_cfg = train_config_of(folder, CalibrateConfig(str(folder), data_dir))
    x_val, _ = load_split_data(train_cfg, dataset_dir(train_cfg.data_dir, settings)).part("val")
    clf = load_classifier(model_pt, "cpu")
    torch_val = clf.runtime.forward(x_val)[0]
    report["site_check"] = write_site_check(folder, x_val, torch_val, report, head_of(clf.net))
    onnx_json.write_text(json.dumps(report, indent=2))
    return dict(report["site_check"])


def write_site_check(out_dir: Path, x_val: np.ndarray, torch_val: np.ndarray,
                     report: dict[str, Any], head: Head) -> dict[str, Any]:
    """Write ``out_dir/check.npz``: validation slices, their PyTorch logits, and for each
    variant ``report`` (``onnx.json``) kept, the largest logit difference it had on the whole
    validation part and its top-1 agreement on these slices, run here; returns what
    ``onnx.json`` records of it."""
    idx = choose_check_slices(len(x_val))
    x_check, ref = x_val[idx], torch_val[idx]
    accepted: dict[str, dict[str, float]] = {}
    for name, entry in report["variants"].items():
        if entry.get("kept"):
            logits = make_runtime(out_dir, name, head).forward(x_check)[0]
            accepted[name] = {
                "max_logit_difference": float(entry["val"]["max_logit_difference"]),
                "agreement": float((logits.argmax(1) == ref.argmax(1)).mean())}
    write_check_set(out_dir, x_check, ref, accepted, report["source_sha256"])
    return {"file": CHECK_FILE, "n": int(len(idx)), "accepted": accepted,
            "rule": f"top-1 agreement on the check set not below the export's; largest logit "
                    f"difference <= {FP32_TOLERANCE} (fp32) or {SLACK} x the export's on "
                    f"validation"}

