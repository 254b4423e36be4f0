"""The segmentation U-Net exported to ONNX: same labels as PyTorch + MONAI, without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrimaster.cli.main import main
from mrimaster.errors import ModelError
from tests.segmentation.synthetic import write_case


@pytest.fixture(scope="module")
def exported(seg_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, run = seg_run
    folder = tmp_path_factory.mktemp("seg-onnx") / "model"
    shutil.copytree(run, folder)
    assert main(["seg", "export-onnx", "--model", str(folder), "--case", str(data / "v")]) == 0
    return folder


def test_export_records_every_variant_and_keeps_fp32(exported: Path) -> None:
    report = json.loads((exported / "model.onnx.json").read_text())
    assert report["cases"] == ["v"]
    fp32 = report["variants"]["onnx-fp32"]
    assert fp32["kept"] and fp32["largest_dice_difference"] <= 0.005
    for scores in fp32["per_case"]["v"].values():
        assert abs(scores["dice"] - scores["torch_dice"]) <= 0.005


def test_a_dropout_model_is_also_checked_on_flair_alone(exported: Path) -> None:
    """The model was trained with modality dropout, so FLAIR alone is an input it serves and
    each variant is checked on it too."""
    report = json.loads((exported / "model.onnx.json").read_text())
    assert report["modality_dropout"]
    assert report["inputs"] == ["v", "v (FLAIR alone)"]
    for variant in report["variants"].values():
        if "per_case" in variant:
            assert set(variant["per_case"]) == {"v", "v (FLAIR alone)"}


@pytest.mark.parametrize("grid", ["monai", "even"])
@pytest.mark.parametrize("variant", ["onnx-fp32", "openvino-fp32"])
def test_fp32_graph_gives_the_torch_labels(exported: Path, tmp_path: Path, variant: str,
                                           grid: str) -> None:
    """On either patch grid (PyTorch runs MONAI's sliding window on its own grid, the NumPy
    one on the even grid; the graph always the NumPy one)."""
    from mrimaster.segmentation.cases import find_case
    from mrimaster.segmentation.infer import prepare_inputs
    from mrimaster.segmentation.model import load_segmenter
    from mrimaster.segmentation.passes import predict_regions
    from mrimaster.segmentation.runtime import load_seg_variant

    case = find_case(write_case(tmp_path / "case", "brats2021", seed=7))
    torch_seg = load_segmenter(exported / "model.pt")
    fast = load_seg_variant(exported, variant)
    assert torch_seg.grid == fast.grid == "even"  # the recipe's default, carried by the export
    torch_seg.grid = fast.grid = grid
    volume, _ = prepare_inputs(torch_seg, case)
    np.testing.assert_allclose(fast.logits(volume.image), torch_seg.logits(volume.image),
                               atol=1e-3)
    want = predict_regions(torch_seg, volume.image)
    got = predict_regions(fast, volume.image)
    assert (want != got).mean() < 1e-3


@pytest.mark.usefixtures("no_brain_mri_check")
def test_cli_runtime_choice_is_reported_and_written(exported: Path, tmp_path: Path) -> None:
    case = write_case(tmp_path / "case", "brats2021", seed=7)
    for runtime in ("torch", "onnx"):
        out = tmp_path / runtime
        assert main(["seg", "predict", "--model", str(exported), "--runtime", runtime,
                     "--case", str(case), "--out", str(out)]) == 0
        info = json.loads((out / "volumes.json").read_text())
        assert info["runtime"] == ("torch" if runtime == "torch" else "onnx-fp32")


def test_stale_or_foreign_exports_are_refused(exported: Path, tmp_path: Path) -> None:
    from mrimaster.segmentation.loading import load_segmenter_for_inference

    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    (folder / "model.pt").write_bytes((folder / "model.pt").read_bytes() + b"\0")
    with pytest.raises(ModelError, match="another model.pt"):
        load_segmenter_for_inference(folder, Path("."), "onnx")
    with pytest.raises(ModelError, match="shipped default"):
        main(["--debug", "seg", "export-onnx", "--model", "default", "--case", str(folder)])


@pytest.mark.usefixtures("no_brain_mri_check")
def test_onnx_segmentation_path_imports_no_torch_or_monai(exported: Path, tmp_path: Path
                                                         ) -> None:
    case = write_case(tmp_path / "case", "brats2021", seed=8)
    code = (
        "import sys\n"
        "from mrimaster.cli.main import main\n"
        f"assert main(['seg', 'predict', '--runtime', 'onnx', '--model', {str(exported)!r}, "
        f"'--case', {str(case)!r}, '--out', {str(tmp_path / 'out')!r}]) == 0\n"
        "print('HEAVY', sorted(m for m in ('torch', 'monai', 'mlflow') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out


def test_export_onnx_refuses_the_shipped_folder_without_the_flag() -> None:
    from mrimaster.settings import load_settings

    folder = load_settings().models_dir / "seg-default"
    with pytest.raises(ModelError, match="--write-shipped"):
        main(["--debug", "seg", "export-onnx", "--model", str(folder), "--case", str(folder)])
