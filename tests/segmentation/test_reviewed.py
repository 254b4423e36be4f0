"""Reviewed cases become data: the BraTS-layout export, and fine-tuning from a model on it."""

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from mrimaster.cli.main import main
from mrimaster.errors import DataError
from mrimaster.models.paths import file_sha256
from mrimaster.segmentation import train as train_module
from mrimaster.segmentation.cases import find_case
from mrimaster.segmentation.labels import to_regions
from mrimaster.segmentation.model import load_segmenter, save_segmenter
from mrimaster.segmentation.reviewed import (
    ReviewedCase,
    read_reviewed_dataset,
    reviewed_from_case,
    write_reviewed_dataset,
)
from tests.segmentation.synthetic import synthetic_arrays, write_case

SECRET = "Doe^Jane ACC-99812"


def _load(path: Path) -> Any:
    return nib.load(str(path))


def _leak_header_text(path: Path) -> None:
    """Rewrite a volume with a name in descrip, aux_file, intent_name and an extension."""
    img = _load(path)
    dirty = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)
    dirty.header["descrip"] = SECRET.encode()
    dirty.header["aux_file"] = b"ACC-99812"
    dirty.header["intent_name"] = b"Doe"
    dirty.header.extensions.append(nib.nifti1.Nifti1Extension(6, SECRET.encode()))
    nib.save(dirty, str(path))


def _cases(tmp_path: Path) -> list[ReviewedCase]:
    affine = np.array([[-1.0, 0, 0, 5], [0, -1, 0, 3], [0, 0, 1, 0], [0, 0, 0, 1]])
    old = write_case(tmp_path / "in" / "old", "brats2015", seed=1, affine=affine)
    new = write_case(tmp_path / "in" / "new", "brats2023", seed=2)
    wt = write_case(tmp_path / "in" / "wt", "wt", seed=3)
    _leak_header_text(old / "Flair_subtrMeanDivStd.nii.gz")
    _leak_header_text(old / "OTMultiClass.nii.gz")
    return [reviewed_from_case(find_case(f), f"MRIMaster case {i}, mask version 2 reviewed "
                               f"by user u{i}", name=f"case_{i}")
            for i, f in enumerate((old, new, wt))]


def test_export_layout_labels_and_dataset_json(tmp_path: Path) -> None:
    out = write_reviewed_dataset(_cases(tmp_path), tmp_path / "export")
    files = {p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz")}
    assert files == {"case_0/case_0_flair.nii.gz", "case_0/case_0_t1ce.nii.gz",
                     "case_0/case_0_seg.nii.gz",
                     *(f"case_1/case_1_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2", "seg")),
                     "case_2/case_2_flair.nii.gz", "case_2/case_2_t1.nii.gz",
                     "case_2/case_2_seg.nii.gz"}
    # labels in BraTS 2021 whatever the input convention (2015: 4 stays 4; 2023: 3 -> 4),
    # whole tumour {0, 1} for the WT-only case
    for i, seed in ((0, 1), (1, 2)):
        seg = _load(out / f"case_{i}" / f"case_{i}_seg.nii.gz")
        assert seg.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(seg.dataobj), synthetic_arrays(seed=seed)[1])
    wt = np.asarray(_load(out / "case_2" / "case_2_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(wt, (synthetic_arrays(seed=3)[1] > 0).astype(np.uint8))
    # voxels and affine kept
    flair = _load(out / "case_0" / "case_0_flair.nii.gz")
    np.testing.assert_array_equal(np.asarray(flair.dataobj), synthetic_arrays(seed=1)[0]["flair"])
    assert flair.affine[0, 0] == -1 and flair.affine[0, 3] == 5

    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "NCR/NET": 1, "ED": 2, "ET": 4}
    assert dataset["label_conventions"]["wt"] == {"background": 0, "tumour": 1}
    assert dataset["numTraining"] == 3 and dataset["file_ending"] == ".nii.gz"
    assert dataset["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1-Gd", "3": "T2"}
    assert dataset["name"] and "licence" in dataset
    by_case = {e["case"]: e for e in dataset["training"]}
    assert by_case["case_0"]["source"] == "MRIMaster case 0, mask version 2 reviewed by user u0"
    assert by_case["case_0"]["input_convention"] == "brats2015"
    assert by_case["case_0"]["modalities"] == ["flair", "t1ce"]
    assert [by_case[f"case_{i}"]["label_convention"] for i in range(3)] == \
        ["brats2021", "brats2021", "wt"]

    # no header text survives, in any field or extension
    for path in out.rglob("*.nii.gz"):
        header = _load(path).header
        assert header["descrip"].item() == b"" and header["aux_file"].item() == b""
        assert header["intent_name"].item() == b"" and len(header.extensions) == 0
        raw = gzip.decompress(path.read_bytes())
        assert b"Doe" not in raw and b"ACC-99812" not in raw

    # read back with each case's convention: the WT-only case defines WT alone
    cases = {c.name: c for c in read_reviewed_dataset(out)}
    assert cases["case_2"].convention == "wt" and cases["case_0"].convention == "brats2021"
    seg_path = cases["case_2"].seg
    assert seg_path is not None
    _, known = to_regions(np.asarray(_load(seg_path).dataobj), "wt")
    assert known.tolist() == [True, False, False]


def test_export_refuses_identifying_names_and_misaligned_grids(tmp_path: Path) -> None:
    case = _cases(tmp_path)[1]
    bad = ReviewedCase("Doe Jane", case.images, case.seg, case.convention, case.source)
    with pytest.raises(DataError, match="pseudonym"):
        write_reviewed_dataset([bad], tmp_path / "a")
    small = write_case(tmp_path / "small", "brats2021", seed=5, shape=(20, 22, 18))
    shifted = ReviewedCase("x", {**case.images, "t2": small / "x_t2.nii.gz"}, case.seg,
                           case.convention, case.source)
    with pytest.raises(DataError, match="grid"):
        write_reviewed_dataset([shifted], tmp_path / "b")
    wrong = ReviewedCase("y", case.images, case.seg, "wt", case.source)  # labels 1-3 in "wt"
    with pytest.raises(DataError, match="not part of the wt convention"):
        write_reviewed_dataset([wrong], tmp_path / "c")


def test_finetune_starts_from_init_and_writes_a_card(
        seg_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, trained = seg_run
    run = tmp_path / "init"  # a model measured on MONAI's patch grid, as the shipped one
    shutil.copytree(trained, run)
    older = load_segmenter(run / "model.pt")
    older.grid = "monai"
    save_segmenter(run / "model.pt", older)
    export = tmp_path / "export"
    assert main(["seg", "export-dataset", "--case", str(data / "v"),
                 "--case", str(write_case(tmp_path / "c9", "wt", seed=9)),
                 "--source", "reference of {case}", "--out", str(export)]) == 0
    seen: dict[str, Any] = {}
    original = train_module.train_one_epoch

    def spy(net: torch.nn.Module, *args: Any, **kwargs: Any) -> float:
        if not seen:  # before the first optimiser step
            seen["state"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            seen["lr"] = args[2].param_groups[0]["initial_lr"]
        return original(net, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", spy)
    out = tmp_path / "ft"
    # no --config: the recipe saved with the init run (its train_cases a, b are replayed)
    assert main(["seg", "train", "--init", str(run), "--data", str(export), "--out", str(out),
                 "--no-track", "--set", "epochs=1", "--set", "iterations=1",
                 "--set", "val_cases=[]", "--set", "num_threads=2"]) == 0
    init = load_segmenter(run)
    for key, value in init.net.state_dict().items():
        torch.testing.assert_close(seen["state"][key], value)
    assert seen["lr"] == pytest.approx(5e-4)
    sha = file_sha256(run / "model.pt")
    record = json.loads((out / "run.json").read_text())
    assert record["init"] == {"model": str(run), "sha256": sha}
    assert load_segmenter(out).meta["init"]["sha256"] == sha
    card = (out / "MODEL_CARD.md").read_text()
    assert sha in card and "reference of v" in card and "`a`" in card
    assert "--init" in card or "pytest" in card  # the command that ran
    tuned = load_segmenter(out)
    # its grid carries over (the recipe replayed from the init run says even)
    assert tuned.grid == "monai"
    assert yaml.safe_load((out / "config.yaml").read_text())["grid"] == "monai"
    changed = any(not torch.equal(tuned.net.state_dict()[k], v)
                  for k, v in init.net.state_dict().items() if v.is_floating_point())
    assert changed


def test_finetune_refuses_another_architecture(seg_run: tuple[Path, Path],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data, run = seg_run
    code = main(["seg", "train", "--init", str(run), "--replay", str(data), "--out",
                 str(tmp_path / "x"), "--no-track", "--set", "channels=[8, 32]",
                 "--set", "epochs=1", "--set", "iterations=1"])
    assert code == 2
    assert "cannot fine-tune" in capsys.readouterr().err
