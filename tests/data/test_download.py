import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from mrimaster.cli.main import main
from mrimaster.data import download
from mrimaster.data.download import DatasetSource, download_dataset, verify_folder
from mrimaster.errors import DataError
from tests.conftest import write_class_folders


@pytest.fixture
def tiny_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A published copy (``Training/<class>/...`` inside a repo folder) and its manifest."""
    published = tmp_path / "published" / "Repo-master"
    write_class_folders(published / "Training", per_class=2)
    rows = {}
    for p in sorted((published / "Training").rglob("*.*")):
        rows[p.relative_to(published / "Training").as_posix()] = (
            p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    source = DatasetSource("tiny", "http://127.0.0.1:9/none.zip", "Training", "tiny-training",
                           "unused.csv", "test data")
    monkeypatch.setitem(download.SOURCES, "tiny", source)
    monkeypatch.setattr(download, "load_manifest", lambda s: rows)
    return published


def test_local_folder_copy_is_verified(tiny_source: Path, tmp_path: Path) -> None:
    target = download_dataset("tiny", tmp_path / "root", tiny_source)
    assert target == tmp_path / "root" / "tiny-training"
    assert len(list(target.rglob("*.*"))) == 8
    assert verify_folder(target, download.load_manifest(download.SOURCES["tiny"])) == []


def test_zip_archive_is_extracted_and_verified(tiny_source: Path, tmp_path: Path) -> None:
    archive = tmp_path / "master.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in tiny_source.rglob("*"):
            zf.write(p, p.relative_to(tiny_source.parent).as_posix())
    target = download_dataset("tiny", tmp_path / "root", archive)
    assert len(list(target.rglob("*.*"))) == 8


def test_altered_copy_is_rejected_and_nothing_is_left(tiny_source: Path, tmp_path: Path) -> None:
    victim = next((tiny_source / "Training" / "glioma_tumor").iterdir())
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(DataError, match="do not match the published checksums"):
        download_dataset("tiny", tmp_path / "root", tiny_source)
    assert not (tmp_path / "root" / "tiny-training").exists()
    assert [p.name for p in (tmp_path / "root").iterdir()] == []


def test_unreachable_url_says_how_to_work_offline(tiny_source: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "download", "tiny", "--data-root", str(tmp_path / "root")])
    assert code == 2
    assert "--source" in capsys.readouterr().err


def test_environment_variable_source(tiny_source: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRIMASTER_TINY_SOURCE", str(tiny_source))
    assert main(["data", "download", "tiny", "--data-root", str(tmp_path / "root")]) == 0
    shutil.rmtree(tmp_path / "root")


@pytest.mark.realdata
def test_shipped_manifest_matches_the_real_dataset(data_root: Path) -> None:
    manifest = download.load_manifest(download.SOURCES["sartaj"])
    assert len(manifest) == 2870
    assert verify_folder(data_root / "sartaj-training", manifest) == []
