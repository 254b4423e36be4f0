"""ONNX export and the torch-free runtimes: same outputs as PyTorch, stale exports refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrimaster.errors import ModelError
from mrimaster.inference.forward import TorchRuntime
from mrimaster.inference.graph import VARIANTS
from mrimaster.inference.onnx_runtime import variant_problem
from tests.conftest import synthetic_slice

# needs the [fast] extra, which .ci/run installs: without it these tests fail, never skip


def _classifier(arch: str, size: int):  # type: ignore[no-untyped-def]
    import torch

    from mrimaster.models.checkpoint import Classifier
    from mrimaster.models.registry import build_model

    torch.manual_seed(0)
    net = build_model(arch, 4, pretrained=False, image_size=size).eval()
    return Classifier(arch, ["glioma", "meningioma", "no_tumor", "pituitary"], size, net=net)


@pytest.mark.parametrize(("arch", "size"), [("efficientnet-lite0", 64), ("mri-cnn", 64)])
@pytest.mark.parametrize("batch", [1, 5])
def test_exported_graph_gives_the_torch_logits_and_features(
        tmp_path: Path, arch: str, size: int, batch: int) -> None:
    from mrimaster.inference.forward import head_of
    from mrimaster.inference.onnx_export import export_graph, half_storage
    from mrimaster.inference.onnx_runtime import GraphRuntime

    clf = _classifier(arch, size)
    export_graph(clf.net, tmp_path / "fp32.onnx", size)
    half_storage(tmp_path / "fp32.onnx", tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").stat().st_size < 0.6 * (tmp_path / "fp32.onnx").stat().st_size
    images = np.stack([synthetic_slice(i, size, i % 4) for i in range(batch)])
    # the model file stores float16 weights: compare with the torch net rounded the same way
    for p in clf.net.parameters():
        p.data = p.data.half().float()
    want_logits, want_feats = TorchRuntime(clf.net).forward(images)
    for variant in ("onnx-fp32", "openvino-fp32"):
        runtime = GraphRuntime(tmp_path / "model.onnx", head_of(clf.net), variant)
        logits, feats = runtime.forward(images)
        assert logits.shape == (batch, 4) and feats.shape == want_feats.shape
        np.testing.assert_allclose(logits, want_logits, atol=1e-4)
        np.testing.assert_allclose(feats, want_feats, atol=1e-4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A calibrated synthetic Lite0 exported with every variant this machine can run."""
    from mrimaster.inference.onnx_export import export_variants
    from mrimaster.models.checkpoint import save_classifier
    from mrimaster.training.fit_trust import CalibrateConfig, CalibrationData, fit_trust

    folder = tmp_path_factory.mktemp("export")
    clf = _classifier("efficientnet-lite0", 64)
    labels = np.arange(96) % 4
    images = np.stack([synthetic_slice(i, 64, k) for i, k in enumerate(labels)])
    data = CalibrationData(images[:32], labels[:32], images[32:80], labels[32:80],
                           images[80:], labels[80:])
    fit = fit_trust(clf.runtime, clf.classes, data, CalibrateConfig("synthetic"))
    clf.temperature, clf.referral, clf.ood = fit.temperature, fit.referral, fit.ood
    save_classifier(folder / "model.pt", clf)
    from mrimaster.models.checkpoint import load_classifier

    report = export_variants(load_classifier(folder / "model.pt"), folder / "model.pt", folder,
                             data)
    return folder, report


def test_export_keeps_fp32_and_reports_every_variant(exported: tuple[Path, dict]) -> None:
    folder, report = exported
    assert set(report["variants"]) == set(VARIANTS)
    fp32 = report["variants"]["onnx-fp32"]
    assert fp32["kept"] and fp32["val"]["top1_agreement"] == 1.0
    for name, entry in report["variants"].items():
        on_disk = (folder / VARIANTS[name].trust).is_file()
        assert on_disk == entry["kept"], name  # a trust file on disk means validated
        if entry["kept"] and VARIANTS[name].precision != "fp32":
            assert entry["val"]["top1_agreement"] >= 0.99
            assert entry["val"]["torch_macro_f1"] - entry["val"]["macro_f1"] <= 0.005


def test_export_writes_a_check_set_its_variants_pass_here(exported: tuple[Path, dict],
                                                          tmp_path: Path) -> None:
    from mrimaster.inference.loading import load_for_inference
    from mrimaster.inference.site_check import CACHE_FILE, read_check_set

    folder, report = exported
    check = read_check_set(folder)
    assert check is not None
    images, logits, meta = check
    assert images.dtype == np.uint8 and images.shape == (report["site_check"]["n"], 64, 64)
    assert logits.shape == (len(images), 4)
    kept = {n for n, e in report["variants"].items() if e["kept"]}
    assert set(meta["accepted"]) == kept
    first = load_for_inference(folder, Path("."), "auto", cache_dir=tmp_path)
    choice = first.meta["runtime_choice"]
    assert choice["runtime"] in kept and "passed its check on this CPU" in choice["why"]
    assert "cached" not in choice["why"] and (tmp_path / CACHE_FILE).is_file()
    again = load_for_inference(folder, Path("."), "auto", cache_dir=tmp_path)
    assert again.meta["runtime_choice"]["runtime"] == choice["runtime"]
    assert "cached" in again.meta["runtime_choice"]["why"]


def test_onnx_classifier_decides_like_torch(exported: tuple[Path, dict]) -> None:
    from mrimaster.inference.loading import load_for_inference
    from mrimaster.trust.referral import TrustRule, assess

    folder, _ = exported
    onnx = load_for_inference(folder, Path("."), "onnx")
    torch_clf = load_for_inference(folder, Path("."), "torch")
    assert onnx.runtime.name.startswith("onnx-") and torch_clf.runtime.name == "torch"
    images = np.stack([synthetic_slice(500 + i, 64, i % 4) for i in range(12)])
    if onnx.runtime.name == "onnx-fp32":  # same rule, same numbers: same decisions
        a = assess(onnx.runtime, TrustRule.of(onnx), images)
        b = assess(torch_clf.runtime, TrustRule.of(torch_clf), images)
        assert a.status == b.status
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
        np.testing.assert_allclose(a.distance, b.distance, rtol=1e-3)


def test_a_stale_export_is_refused_and_auto_falls_back_to_torch(
        exported: tuple[Path, dict], tmp_path: Path) -> None:
    import shutil

    from mrimaster.inference.loading import load_for_inference
    from mrimaster.models.checkpoint import load_classifier, save_classifier

    folder = tmp_path / "model"
    shutil.copytree(exported[0], folder)
    clf = load_classifier(folder / "model.pt")
    clf.temperature = 2.5  # recalibrated after the export
    save_classifier(folder / "model.pt", clf)
    assert "another model.pt" in (variant_problem(folder, "onnx-fp32") or "")
    with pytest.raises(ModelError, match="another model.pt"):
        load_for_inference(folder, Path("."), "onnx")
    assert load_for_inference(folder, Path("."), "auto").runtime.name == "torch"
    (folder / "model.onnx").write_bytes(b"not a graph")
    assert "not the graph" in (variant_problem(folder, "onnx-fp32") or "")


def test_predict_path_imports_no_torch_and_no_plotting(exported: tuple[Path, dict]) -> None:
    folder, _ = exported
    image = folder / "slice.png"
    from PIL import Image

    Image.fromarray(synthetic_slice(7, 128)).save(image)
    code = (
        "import sys\n"
        "from mrimaster.cli.main import main\n"
        f"assert main(['predict', '--runtime', 'onnx', '--model', {str(folder)!r}, "
        f"{str(image)!r}, '--format', 'json']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'matplotlib', 'monai', 'mlflow', 'skimage', "
        "'torchvision') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out
    assert '"status"' in out and '"uncertainty"' in out


def test_openvino_int8_keeps_the_leading_convolutions_in_fp32(tmp_path: Path) -> None:
    """NNCF quantises every convolution but the first two, which see the gray levels."""
    import openvino as ov

    from mrimaster.inference.onnx_export import (
        FP32_LEADING_CONVOLUTIONS,
        export_graph,
        quantize_openvino_int8,
    )

    clf = _classifier("efficientnet-lite0", 64)
    export_graph(clf.net, tmp_path / "fp32.onnx", 64)
    images = np.stack([synthetic_slice(i, 64, i % 4) for i in range(16)])
    quantize_openvino_int8(tmp_path / "fp32.onnx", tmp_path / "int8.xml", images)
    model = ov.Core().read_model(str(tmp_path / "int8.xml"))
    convs = [op for op in model.get_ordered_ops()
             if op.get_type_name() in ("Convolution", "GroupConvolution")]

    def quantised(op) -> bool:  # type: ignore[no-untyped-def]
        """Whether the convolution's activation input comes from a FakeQuantize (through
        the explicit padding of TensorFlow-style "same" convolutions)."""
        node = op.input_value(0).get_node()
        while node.get_type_name() == "Pad":
            node = node.input_value(0).get_node()
        return node.get_type_name() == "FakeQuantize"

    flags = [quantised(op) for op in convs]
    assert not any(flags[:FP32_LEADING_CONVOLUTIONS])
    assert all(flags[FP32_LEADING_CONVOLUTIONS:]), flags
    x = np.stack([synthetic_slice(100 + i, 64, i % 4) for i in range(4)])
    from mrimaster.inference.forward import head_of
    from mrimaster.inference.onnx_runtime import GraphRuntime

    logits, feats = GraphRuntime(tmp_path / "int8.xml", head_of(clf.net), "openvino-int8"
                                 ).forward(x)
    assert logits.shape == (4, 4) and np.isfinite(logits).all() and feats.shape[0] == 4


def test_an_openvino_graph_is_hashed_with_its_weights(tmp_path: Path) -> None:
    from mrimaster.inference.onnx_runtime import graph_sha256

    (tmp_path / "g.xml").write_text("<net/>")
    (tmp_path / "g.bin").write_bytes(b"\x00" * 8)
    first = graph_sha256(tmp_path / "g.xml")
    (tmp_path / "g.bin").write_bytes(b"\x01" * 8)
    assert graph_sha256(tmp_path / "g.xml") != first
    (tmp_path / "g.bin").unlink()
    assert graph_sha256(tmp_path / "g.xml").startswith("missing")
