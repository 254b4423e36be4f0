"""Fetch public datasets into the data root, verifying every file against a manifest."""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from mrimaster.errors import DataError
from mrimaster.models.paths import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSource:
    """A downloadable dataset.

    Attributes:
        name: Short name (``sartaj``).
        url: Public archive (a zip) holding the dataset.
        folder_in_archive: Folder inside the archive holding the class folders to keep.
        target: Folder name under the data root.
        manifest: Package resource with ``path,size,sha256`` per file of that folder.
        citation: How to cite it.
    """

    name: str
    url: str
    folder_in_archive: str
    target: str
    manifest: str
    citation: str


SOURCES: dict[str, DatasetSource] = {
    "sartaj": DatasetSource(
        "sartaj",
        "https://github.com/SartajBhuvaji/Brain-Tumor-Classification-DataSet/archive/refs/heads/"
        "master.zip",
        "Training",
        "sartaj-training",
        "sartaj_manifest.csv",
        "S. Bhuvaji, A. Kadam, P. Bhumkar, S. Dedge, S. Kanchan, 'Brain Tumor Classification "
        "(MRI)', Kaggle dataset sartajbhuvaji/brain-tumor-classification-mri, 2020",
    ),
}


def load_manifest(source: DatasetSource) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of every file the dataset must contain."""
    text = resources.files("mrimaster.data").joinpath(source.manifest).read_text()
    return {r["path"]: (int(r["size"]), r["sha256"]) for r in csv.DictReader(text.splitlines())}


def verify_folder(folder: Path, manifest: dict[str, tuple[int, str]]) -> list[str]:
    """Problems found comparing ``folder`` with ``manifest`` (missing or altered files)."""
    problems = []
    for rel, (size, sha) in tqdm(
        sorted(manifest.items()), desc="verifying", unit="file", disable=None, leave=False
    ):
        path = folder / rel
        if not path.is_file():
            problems.append(f"missing {rel}")
        elif path.stat().st_size != size or file_sha256(path) != sha:
            problems.append(f"checksum mismatch {rel}")
    return problems


def _find_folder(root: Path, name: str, manifest: dict[str, tuple[int, str]]) -> Path:
    """The folder under ``root`` that holds the manifest's class folders."""
    first_class = next(iter(manifest)).split("/")[0]
    candidates = [root] + [p for p in root.rglob(name) if p.is_dir()]
    for cand in candidates:
        if (cand / first_class).is_dir():
            return cand
    raise DataError(f"no {name}/ folder with class folders found in {root}")


def _fetch(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length", 0)) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="downloading", disable=None
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        raise DataError(
            f"could not download {url}: {exc}",
            "pass --source with a local copy (zip or folder), or set MRIMASTER_SARTAJ_SOURCE",
        ) from exc


def download_dataset(
    name: str, data_root: Path, source_path: Path | None = None, force: bool = False
) -> Path:
    """Put dataset ``name`` under ``data_root``, from its public URL or a local copy.

    Args:
        name: Key of :data:`SOURCES`.
        data_root: Where datasets live.
        source_path: A local zip archive or folder to copy from instead of downloading.
        force: Replace an existing copy.

    Returns:
        The dataset folder. Every file is checked against the shipped SHA-256 manifest; any
        mismatch aborts and leaves no partial copy behind.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}", f"choose one of: {', '.join(SOURCES)}")
    source = SOURCES[name]
    manifest = load_manifest(source)
    target = data_root / source.target
    if target.exists() and not force:
        problems = verify_folder(target, manifest)
        if not problems:
            log.info("%s already present and verified at %s", name, target)
            return target
        raise DataError(
            f"{target} exists but does not match the manifest ({problems[0]}, "
            f"{len(problems)} problems)",
            "rerun with --force to replace it",
        )
    data_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_root) as tmp_name:
        tmp = Path(tmp_name)
        if source_path is None:
            archive = tmp / "archive.zip"
            _fetch(source.url, archive)
        else:
            archive = Path(source_path)
            if not archive.exists():
                raise DataError(f"local source {archive} does not exist")
        if archive.is_dir():
            folder = _find_folder(archive, source.folder_in_archive, manifest)
        else:
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp / "extracted")
            except zipfile.BadZipFile as exc:
                raise DataError(f"{archive} is not a valid zip archive") from exc
            folder = _find_folder(tmp / "extracted", source.folder_in_archive, manifest)
        problems = verify_folder(folder, manifest)
        if problems:
            raise DataError(
                f"{len(problems)} files do not match the published checksums "
                f"(first: {problems[0]})",
                "the copy is incomplete or altered; fetch it again",
            )
        staging = tmp / "verified"
        staging.mkdir()
        for rel in manifest:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / rel, staging / rel)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), str(target))
    log.info("%s: %d files verified into %s", name, len(manifest), target)
    return target
