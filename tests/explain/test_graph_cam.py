"""CAM from an exported graph's own forward pass (issue 23 item 7): the graph returns the
feature map its pooling reads, and the map weighed with the head equals PyTorch's CAM (which
equals Grad-CAM there: test_forward_cam.py) within each precision's error."""

from pathlib import Path

import numpy as np
import pytest

from mrimaster.data.folders import load_slices, scan_class_folders
from mrimaster.data.images import model_input
from mrimaster.data.transforms import eval_batch
from mrimaster.errors import MRIMasterError
from mrimaster.explain.forward_cam import ForwardCAM, graph_cam
from mrimaster.inference.graph import FEATURE_MAP, open_graph
from mrimaster.inference.onnx_runtime import load_variant
from mrimaster.models.checkpoint import load_classifier
from mrimaster.models.paths import resolve_model_path
from mrimaster.settings import load_settings


def _shipped() -> Path:
    return resolve_model_path("default", load_settings().models_dir).parent


@pytest.fixture(scope="module")
def seed_slices(data_root: Path) -> np.ndarray:
    """12 real slices spread over the seed folder's classes, prepared as the model reads them."""
    scan = scan_class_folders(data_root / "sartaj-training")
    pick = np.linspace(0, len(scan.paths) - 1, 12).astype(int)
    return load_slices([scan.paths[i] for i in pick], None, 192, progress=False).images


@pytest.mark.realdata
@pytest.mark.parametrize(("variant", "largest", "correlation"), [
    ("onnx-fp32", 0.005, 0.9999), ("openvino-fp32", 0.005, 0.9999),
    ("openvino-int8", 0.10, 0.99)])
def test_graph_cam_equals_pytorch_cam(seed_slices: np.ndarray, variant: str, largest: float,
                                      correlation: float) -> None:
    """fp32 graphs: the same maps to float error (measured 0.16% of the peak); int8: the same
    maps to its quantisation (measured: correlation >= 0.999, largest difference 5%)."""
    folder = _shipped()
    torch_clf = load_classifier(folder / "model.pt", "cpu")
    assert torch_clf.image_size == seed_slices.shape[1]
    reference = ForwardCAM(torch_clf.net)(eval_batch(seed_slices))
    runtime = load_variant(folder, variant).runtime
    got = graph_cam(runtime, seed_slices, reference.classes)
    assert got.upsampled.shape == reference.upsampled.shape
    np.testing.assert_array_equal(got.classes, reference.classes)
    for ours, theirs in zip(got.upsampled, reference.upsampled, strict=True):
        peak = float(theirs.max())
        assert peak > 0
        assert float(np.abs(ours - theirs).max()) <= largest * peak
        assert float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]) >= correlation
    # its own class when none is asked: the graph's arg-max
    own = graph_cam(runtime, seed_slices[:2])
    np.testing.assert_array_equal(own.classes, own.logits.argmax(axis=1))


@pytest.mark.realdata
@pytest.mark.parametrize("variant", ["onnx-fp32", "openvino-fp32"])
def test_the_graph_file_is_unchanged_and_its_outputs_stay_the_same(seed_slices: np.ndarray,
                                                                   variant: str) -> None:
    """The feature map is an output added when compiling: logits and features as before."""
    graph = _shipped() / "model.onnx"
    before = graph.read_bytes()
    x = model_input(seed_slices[:3])
    plain = open_graph(graph, variant)(x)
    mapped = open_graph(graph, variant, feature_map=True)(x)
    assert graph.read_bytes() == before
    assert {"logits", "features"} <= set(plain) and FEATURE_MAP not in plain
    assert set(mapped) == set(plain) | {FEATURE_MAP}
    np.testing.assert_allclose(mapped["logits"], plain["logits"], atol=1e-5)
    np.testing.assert_allclose(mapped[FEATURE_MAP].mean(axis=(2, 3)), plain["features"],
                               atol=1e-5)


@pytest.mark.parametrize("variant", ["onnx-fp32", "openvino-fp32"])
def test_a_graph_without_pooled_features_is_refused(variant: str) -> None:
    """The segmenter's graph has no ``features``: no map, a clear error (PyTorch is used)."""
    seg_graph = load_settings().models_dir / "seg-default" / "model.onnx"
    with pytest.raises(MRIMasterError, match="does not pool a feature map"):
        open_graph(seg_graph, variant, feature_map=True)
