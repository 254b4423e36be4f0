import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mrimaster.cli.main import main
from mrimaster.data.audit import run_audit
from tests.conftest import write_class_folders


def test_audit_finds_planted_duplicates_and_leakage(tmp_path: Path) -> None:
    root = write_class_folders(tmp_path / "a", per_class=5)
    glioma = root / "glioma_tumor"
    shutil.copy(glioma / "img_1.jpg", glioma / "copy_a.jpg")  # exact copy
    shutil.copy(glioma / "img_1.jpg", glioma / "copy_b.jpg")  # a second one
    with Image.open(glioma / "img_2.jpg") as im:  # resized and mirrored re-encoding
        im.resize((90, 90)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            glioma / "near.jpg", quality=70)
    other = write_class_folders(tmp_path / "b", per_class=3, seed=500)
    shutil.copy(root / "pituitary_tumor" / "img_4.jpg", other / "pituitary_tumor" / "leak.jpg")

    report = run_audit(root, against=other, progress=False)
    folder = report["folder"]
    assert folder["images"] == 23
    assert folder["class_counts"]["glioma"] == 8
    assert folder["exact_duplicates"]["groups"] == 1
    assert folder["exact_duplicates"]["files"] == 3
    assert folder["exact_duplicates"]["redundant"] == 2
    near = folder["near_duplicates"]["list"]
    assert any(sorted(g) == ["glioma_tumor/img_2.jpg", "glioma_tumor/near.jpg"] for g in near)
    assert report["leakage"]["exact_pairs"] == 1
    assert report["leakage"]["exact_list"] == [["pituitary_tumor/img_4.jpg",
                                                "pituitary_tumor/leak.jpg"]]
    assert report["leakage"]["near_pairs"] >= 1


def test_audit_cli_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    root = write_class_folders(tmp_path / "a", per_class=3)
    assert main(["data", "audit", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "exact duplicates: 0 groups" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "audit.json").read_text())["images"] == 12
    assert (tmp_path / "out" / "audit.md").read_text().startswith("# Audit of")


@pytest.mark.realdata
def test_real_training_folder_exact_duplicates(data_root: Path) -> None:
    report = run_audit(data_root / "sartaj-training", progress=False)
    exact = report["exact_duplicates"]
    assert (exact["groups"], exact["files"], exact["redundant"]) == (73, 166, 93)
    assert report["images"] == 2870
    assert report["class_counts"] == {"glioma": 826, "meningioma": 822, "no_tumor": 395,
                                      "pituitary": 827}
    assert report["near_duplicates"]["groups"] > exact["groups"]
