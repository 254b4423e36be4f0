"""``mrimaster dicom deidentify``: outputs, the app's key, burned-in flags and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage

from mrimaster.cli.main import main
from mrimaster.storage.deid import deidentify, pseudonym
from tests.serving.test_deid import IDENTIFIERS, identified_dicom

KEY = bytes(range(32))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_bytes(KEY)
    return path


def _inputs(root: Path) -> Path:
    folder = root / "Doe John"  # a folder name can carry a name: never reused
    (folder / "series").mkdir(parents=True)
    identified_dicom(folder / "Doe_John_1.dcm", np.ones((8, 8)))
    identified_dicom(folder / "series" / "Doe_John_2.dcm", np.ones((8, 8)))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_deidentifies_a_folder_and_a_file_like_the_app(tmp_path: Path, key_file: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    folder = _inputs(tmp_path)
    single = identified_dicom(tmp_path / "single.dcm", np.full((8, 8), 3), patient="PID-777")
    out = tmp_path / "out"
    assert main(["dicom", "deidentify", str(folder), str(single), "--out", str(out),
                 "--key-file", str(key_file)]) == 0
    text = capsys.readouterr().out
    assert "skipped (not DICOM)" in text and "notes.txt" in text
    assert "de-identified 3 file(s)" in text and "0 failed" in text
    written = sorted(out.iterdir())
    assert len(written) == 3
    for path in written:
        ds = pydicom.dcmread(path)
        assert path.name == f"{ds.SOPInstanceUID}.dcm" and "Doe" not in path.name
        assert ds.PatientIdentityRemoved == "YES"
        raw = path.read_bytes()
        assert not [v for v in IDENTIFIERS.values() if v.encode() in raw]
    # the same code as the web app: the same pseudonym and SOP Instance UID for one file
    expected = pydicom.dcmread(single)
    alias = deidentify(expected, KEY)
    assert alias == pseudonym(KEY, "PID-777") and alias in text
    assert (out / f"{expected.SOPInstanceUID}.dcm").is_file()


def test_the_default_key_is_the_web_apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    app = tmp_path / "app"
    monkeypatch.setenv("MRIMASTER_APP_DIR", str(app))
    src = identified_dicom(tmp_path / "a.dcm", np.ones((4, 4)))
    assert main(["dicom", "deidentify", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no secret key" in err and "mrimaster serve" in err
    app.mkdir()
    (app / "secret.key").write_bytes(KEY)
    assert main(["dicom", "deidentify", str(src), "--out", str(tmp_path / "o")]) == 0
    assert pseudonym(KEY, "PID-12345") in capsys.readouterr().out


def test_the_deployments_shared_key_wins_over_the_app_folders(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several hosts share MRIMASTER_SECRET_KEY (issue 27); the CLI must pseudonymise as
    they do, not with a local secret.key of its own."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "secret.key").write_bytes(KEY)
    shared = bytes(range(100, 132))
    monkeypatch.setenv("MRIMASTER_APP_DIR", str(app))
    monkeypatch.setenv("MRIMASTER_SECRET_KEY", shared.hex())
    src = identified_dicom(tmp_path / "a.dcm", np.ones((4, 4)))
    assert main(["dicom", "deidentify", str(src), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert pseudonym(shared, "PID-12345") in text and pseudonym(KEY, "PID-12345") not in text
    monkeypatch.delenv("MRIMASTER_SECRET_KEY")
    monkeypatch.setenv("MRIMASTER_SECRET_KEY_FILE", str(tmp_path / "missing.key"))
    assert main(["dicom", "deidentify", str(src), "--out", str(tmp_path / "o2")]) == 2
    assert "MRIMASTER_SECRET_KEY_FILE" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_burned_in_annotation_is_flagged(tmp_path: Path, key_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = identified_dicom(tmp_path / "shot.dcm", np.ones((4, 4)))
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(path)
    assert main(["dicom", "deidentify", str(path), "--out", str(tmp_path / "o"),
                 "--key-file", str(key_file)]) == 0
    text = capsys.readouterr().out
    assert "WARNING" in text and "BurnedInAnnotation" in text and "1 with burned-in" in text
    (written,) = (tmp_path / "o").iterdir()
    assert pydicom.dcmread(written).PatientIdentityRemoved == "YES"


def test_refusals(tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _inputs(tmp_path)
    key = ["--key-file", str(key_file)]
    assert main(["dicom", "deidentify", "--out", str(tmp_path / "o"), *key]) == 2
    assert "no DICOM file or folder given" in capsys.readouterr().err
    assert main(["dicom", "deidentify", str(folder), "--out", str(folder / "clean"), *key]) == 2
    err = capsys.readouterr().err
    assert "inside the input folder" in err and "hint:" in err
    assert not (folder / "clean").exists()
    assert main(["dicom", "deidentify", str(folder), "--out", str(tmp_path / "o"),
                 "--key-file", str(tmp_path / "missing.key")]) == 2
    assert "no secret key" in capsys.readouterr().err
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "a.txt").write_text("hello")
    assert main(["dicom", "deidentify", str(only_text), "--out", str(tmp_path / "o2"), *key]) == 2
    assert "no DICOM file among the inputs" in capsys.readouterr().err


def test_an_unreadable_file_is_reported_and_the_others_written(
        tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _inputs(tmp_path)
    meta = FileMetaDataset()  # a DICOM file meta, then a body that is not deflated data
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    with (folder / "broken.dcm").open("wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(f), meta)
        f.write(b"not deflated data" * 4)
    out = tmp_path / "o"
    assert main(["dicom", "deidentify", str(folder), str(tmp_path / "nowhere.dcm"),
                 "--out", str(out), "--key-file", str(key_file)]) == 2
    captured = capsys.readouterr()
    assert "cannot de-identify" in captured.err and "broken.dcm" in captured.err
    assert "nowhere.dcm: no such file" in captured.err
    assert "2 input(s) could not be de-identified" in captured.err
    assert "de-identified 2 file(s)" in captured.out and "2 failed" in captured.out
    assert len(list(out.iterdir())) == 2
