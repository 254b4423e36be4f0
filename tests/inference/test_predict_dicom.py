"""``mrimaster predict`` on DICOM: read as the web app reads an uploaded slice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from mrimaster.cli.main import main
from mrimaster.data.folders import load_slices
from mrimaster.inference.loading import load_for_inference
from mrimaster.inference.predict import decode_dicom_slice, predict_files
from mrimaster.serving.cases import decode_upload
from tests.conftest import synthetic_slice

CLASSES = ("glioma", "meningioma", "no_tumor", "pituitary")


def write_dicom(path: Path, pixels: np.ndarray | None, *, sop_class: str = MRImageStorage,
                photometric: str = "MONOCHROME2", window: tuple[float, float] | None = None,
                burned_in: bool = False, compress: str | None = None) -> Path:
    """A small DICOM file: 16-bit stored values (``pixels`` is (H, W) or (frames, H, W))."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "MR", "PID-1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    if pixels is not None:
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
        ds.Rows, ds.Columns = pixels.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -10
        if window:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        if compress:
            ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


def mri(seed: int, kind: int = 0) -> np.ndarray:
    return synthetic_slice(seed, 96, kind).astype(np.uint16) * 12 + 40


@pytest.fixture(scope="module")
def model(trained: tuple[Path, Path]) -> Any:
    return load_for_inference(str(trained[1]), Path("unused"), "torch", "cpu")


def web_app_probs(model: Any, path: Path, tmp_path: Path, confirm: bool = False
                  ) -> dict[str, Any]:
    """The web app's reading of an upload (``decode_upload``), classified as
    ``classify_upload`` does: the PNG of the decoded slice."""
    ctx = SimpleNamespace(key=bytes(range(32)))
    _, _, blobs, _ = decode_upload(ctx, path, path.name, "", confirm)  # type: ignore[arg-type]
    png = tmp_path / f"web-{path.stem}.png"
    png.write_bytes(blobs["image"])
    # the model's input and the input checks' statistics are the web app's, bit for bit
    ours = decode_dicom_slice(path, model.image_size)
    web = load_slices([png], None, model.image_size, progress=False)
    assert not isinstance(ours, Exception)
    assert np.array_equal(ours[0], web.images[0]) and ours[1] == web.stats[0]
    rows, skipped = predict_files(model, [png])
    assert not skipped and len(rows) == 1
    return rows[0]


def cli_rows(run: Path, paths: list[Path], capsys: pytest.CaptureFixture[str]
             ) -> tuple[dict[str, dict[str, Any]], str]:
    capsys.readouterr()
    code = main(["predict", "--model", str(run), "--runtime", "torch", "--device", "cpu",
                 *map(str, paths), "--format", "json"])
    out = capsys.readouterr()
    rows = json.loads(out.out) if code == 0 else []
    return {Path(r["path"]).name: r for r in rows if r["status"] != "skipped"}, out.err


def listed_skipped(run: Path, paths: list[Path], capsys: pytest.CaptureFixture[str]
                   ) -> dict[str, dict[str, Any]]:
    """The rows ``predict --format json`` gives for the files it could not read."""
    capsys.readouterr()
    main(["predict", "--model", str(run), "--runtime", "torch", "--device", "cpu",
          *map(str, paths), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    return {Path(r["path"]).name: r for r in rows if r["status"] == "skipped"}


def same_read(a: dict[str, Any], b: dict[str, Any]) -> None:
    """The same read; probabilities up to float noise (a batch of five vs one on the CPU)."""
    for key in ("status", "prediction"):
        assert a[key] == b[key]
    for key in ("confidence", "uncertainty", *(f"p_{c}" for c in CLASSES)):
        assert (a[key] is None) == (b[key] is None)
        if a[key] is not None:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9)


def test_a_dicom_slice_is_classified_exactly_as_the_web_app_does(
        trained: tuple[Path, Path], model: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], accepting_brain_check: Path) -> None:
    # synthetic slices are not brain MRI (the shipped brain-MRI check rejects them): the
    # classes shown are compared with a check that accepts everything
    src = tmp_path / "in"
    src.mkdir()
    files = [
        write_dicom(src / "plain.dcm", mri(1, 0)),
        write_dicom(src / "windowed", mri(2, 1), window=(3000, 6000)),  # no suffix
        write_dicom(src / "inverted.dcm", mri(3, 2), photometric="MONOCHROME1"),
        write_dicom(src / "rle.dcm", mri(4, 3), compress=RLELossless),
        write_dicom(src / "burned.dcm", mri(5, 0), burned_in=True),
    ]
    rows, err = cli_rows(trained[1], files, capsys)
    # stderr says which runtime ran and why, and nothing else (no file skipped)
    assert err == "runtime torch: asked for (--runtime torch)\n" and set(rows) == {
        p.name for p in files}
    for path in files:
        assert rows[path.name]["status"] in ("ok", "refer", "reject")
        same_read(rows[path.name], web_app_probs(model, path, tmp_path,
                                                 confirm=path.name == "burned.dcm"))
    shown = [r for r in rows.values() if r["prediction"] is not None]
    assert shown and all(sum(r[f"p_{c}"] for c in CLASSES) == pytest.approx(1) for r in shown)
    assert rows["rle.dcm"]["p_glioma"] is not None or rows["rle.dcm"]["status"] == "reject"


def test_a_folder_mixing_png_and_dicom_gives_both_and_skips_what_is_not_a_slice(
        trained: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(synthetic_slice(7, 96, 1)).save(folder / "a.png")
    write_dicom(folder / "b.dcm", mri(8, 2))
    write_dicom(folder / "sub" / "IM0001", mri(9, 3))  # DICOM by its preamble only
    write_dicom(folder / "volume.dcm", np.stack([mri(i) for i in range(3)]))
    write_dicom(folder / "report.dcm", None, sop_class=BasicTextSRStorage)
    (folder / "notes.txt").write_text("not an image")
    rows, err = cli_rows(trained[1], [folder], capsys)
    assert list(rows) == ["a.png", "b.dcm", "IM0001"]  # the folder's sorted order
    skipped = {Path(line.split(": ", 1)[0].removeprefix("skipped ")).name: line
               for line in err.splitlines() if line.startswith("skipped ")}
    assert set(skipped) == {"volume.dcm", "report.dcm", "notes.txt"}
    assert len(err.splitlines()) == 1 + len(skipped)  # the runtime, then each skip once
    assert all(line.count(str(folder)) == 1 for line in err.splitlines()[1:])  # path once
    listed = listed_skipped(trained[1], [folder], capsys)  # the output lists them too
    assert set(listed) == set(skipped) and all(
        r["reason"] in skipped[name] and r["prediction"] is None for name, r in listed.items())
    assert "multi-frame" in skipped["volume.dcm"] and "3 frames" in skipped["volume.dcm"]
    assert "no pixel data" in skipped["report.dcm"] and "report" in skipped["report.dcm"]
    assert "not an image file type (.txt)" in skipped["notes.txt"]
    assert "Traceback" not in err

    # the library call keeps its contract: rows and (path, reason) for every skipped file
    found, skipped_rows = predict_files(
        load_for_inference(str(trained[1]), Path("unused"), "torch", "cpu"), [folder])
    assert [Path(r["path"]).name for r in found] == ["a.png", "b.dcm", "IM0001"]
    assert {Path(s["path"]).name for s in skipped_rows} == set(skipped)
    assert all(set(s) == {"path", "reason"} and s["reason"] for s in skipped_rows)


def test_broken_and_only_dicom_inputs_skip_with_a_reason(
        trained: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.dcm"
    fake.write_text("a .dcm file that is not DICOM")
    volume = write_dicom(tmp_path / "vol", np.stack([mri(i) for i in range(2)]))
    rows, err = cli_rows(trained[1], [fake, volume], capsys)
    assert rows == {} and "Traceback" not in err
    assert "fake.dcm" in err and "not a readable DICOM" in err
    assert "multi-frame DICOM with 2 frames" in err
    assert pydicom.dcmread(volume).NumberOfFrames == 2
