"""``mrimaster dicom deidentify``: de-identify DICOM files as the web app stores them.

It runs :func:`mrimaster.storage.deid.deidentify` (DICOM PS3.15 Annex E Basic Application Level
Confidentiality Profile with the Retain Longitudinal Temporal Information Modified Dates option),
under the web app's secret key by default, so pseudonyms, UIDs and date shifts match the app's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrimaster.errors import MRIMasterError
from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dicom", help="DICOM tools: de-identification, study import")
    dicom_sub = p.add_subparsers(dest="dicom_command", required=True)
    de = dicom_sub.add_parser(
        "deidentify", help="de-identify DICOM files (PS3.15 Annex E) into a folder",
        description="De-identify DICOM files exactly as the web app stores them (PS3.15 Annex "
        "E basic profile, dates shifted per patient, UIDs replaced consistently, private tags, "
        "overlays and free text removed). Each output is named by its new SOP Instance UID. "
        "Pixels are not changed: files declaring burned-in annotation (or screen captures) are "
        "flagged, since their pixels may still show the patient's name.")
    de.add_argument("inputs", nargs="*", type=Path, metavar="FILE_OR_FOLDER",
                    help="DICOM files, or folders searched recursively")
    de.add_argument("--out", type=Path, required=True, help="folder for the de-identified files "
                    "(created; must not be inside an input folder)")
    de.add_argument("--key-file", type=Path, help="secret key (default: the web app's: "
                    "MRIMASTER_SECRET_KEY(_FILE), else <MRIMASTER_APP_DIR or data "
                    "root/app>/secret.key, so pseudonyms match the app's)")
    de.set_defaults(handler=run_deidentify)
    im = dicom_sub.add_parser(
        "import", help="convert a DICOM study (folder or zip) to one NIfTI per series",
        description="Convert every DICOM series under PATH (a folder or a zip; classic or "
        "enhanced multi-frame, compressed or not) to NIfTI in --out, decide each series' role "
        "(FLAIR, T1, T1-Gd, T2) and write --out/series.json. 4D series (diffusion, fMRI) and "
        "Siemens mosaics are listed with the reason they are not converted.")
    im.add_argument("path", type=Path, metavar="PATH", help="a DICOM folder or a zip of one")
    im.add_argument("--out", type=Path, required=True, help="folder for the NIfTI files and "
                    "series.json (created)")
    im.set_defaults(handler=run_import)


@dataclass
class _Tally:
    done: int = 0
    skipped: int = 0
    burned_in: int = 0
    failed: list[str] = field(default_factory=list)


def _key(path: Path | None) -> bytes:
    """The key given by ``--key-file``, else the web app's: ``MRIMASTER_SECRET_KEY`` or
    ``MRIMASTER_SECRET_KEY_FILE`` when set (a deployment's shared key), else the app folder's
    ``secret.key``, which must exist (a key made here would match no app)."""
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import load_key, server_key

    explicit = path is not None
    if path is None:
        config = load_serve_config()
        if config.secret_key is not None or config.secret_key_file is not None:
            return server_key(config)
        path = config.app_dir / "secret.key"
    if not path.is_file():
        hint = ("check the path given to --key-file" if explicit else
                "start the web app once (`mrimaster serve` creates it), set "
                "MRIMASTER_SECRET_KEY or MRIMASTER_APP_DIR as the app has them, or pass "
                "--key-file")
        raise MRIMasterError(f"no secret key at {path}", hint)
    key = load_key(path)
    if len(key) < 16:
        raise MRIMasterError(f"the secret key {path} is too short ({len(key)} bytes)",
                             "use the web app's secret.key (32 random bytes)")
    return key


def _check_paths(inputs: list[Path], out: Path) -> None:
    if not inputs:
        raise MRIMasterError("no DICOM file or folder given",
                             "name files or folders: mrimaster dicom deidentify FILES... "
                             "--out DIR")
    target = out.resolve()
    for item in inputs:
        source = item.resolve()
        if source.is_dir() and (target == source or source in target.parents):
            raise MRIMasterError(f"the output folder {out} is inside the input folder {item}",
                                 "choose an --out folder outside every input folder")


def _files(inputs: list[Path], tally: _Tally) -> list[Path]:
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.is_file()))
        elif item.is_file():
            found.append(item)
        else:
            print(f"error: {item}: no such file or folder", file=sys.stderr)
            tally.failed.append(str(item))
    return found


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` while the block runs."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _one(path: Path, out: Path, key: bytes, tally: _Tally) -> None:
    import pydicom
    from pydicom.misc import is_dicom
    from pydicom.uid import generate_uid

    from mrimaster.storage.deid import burned_in_reason, deidentify

    try:
        if not is_dicom(path):
            print(f"skipped (not DICOM): {path}")
            tally.skipped += 1
            return
        ds: Any = pydicom.dcmread(path)
        # scanners write over-long values (an SH of 32 characters): pydicom's complaints about
        # the input are noise here, the output is what de-identification writes
        with warnings.catch_warnings(), _quiet("pydicom"):
            warnings.simplefilter("ignore", UserWarning)
            reason = burned_in_reason(ds)
            alias = deidentify(ds, key)
        target = out / f"{ds.get('SOPInstanceUID') or generate_uid()}.dcm"
        ds.save_as(target)
    except Exception as exc:  # one bad file must not stop the others
        print(f"error: cannot de-identify {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        tally.failed.append(str(path))
        return
    tally.done += 1
    line = f"{path} -> {target.name}  (patient {alias})"
    if reason:
        tally.burned_in += 1
        line += (f"\n  WARNING: {reason}: the header is de-identified but the pixels may "
                 "still show the patient's name; look at the image before sharing it")
    print(line)


def run_deidentify(args: argparse.Namespace, settings: Settings) -> int:
    inputs: list[Path] = list(args.inputs)
    _check_paths(inputs, args.out)
    key = _key(args.key_file)
    tally = _Tally()
    files = _files(inputs, tally)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in files:
        _one(path, args.out, key, tally)
    print(f"de-identified {tally.done} file(s) into {args.out}: {tally.skipped} not DICOM "
          f"skipped, {len(tally.failed)} failed, {tally.burned_in} with burned-in annotation "
          "signs")
    if tally.failed:
        raise MRIMasterError(f"{len(tally.failed)} input(s) could not be de-identified: "
                             + ", ".join(tally.failed[:5])
                             + (" ..." if len(tally.failed) > 5 else ""),
                             "see the errors above; the other files were written")
    if not tally.done:
        raise MRIMasterError("no DICOM file among the inputs",
                             "DICOM files start with a 128-byte preamble and 'DICM'; convert "
                             "others first")
    return 0


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.imaging.dicom_import import import_study

    with warnings.catch_warnings(), _quiet("pydicom"):
        warnings.simplefilter("ignore", UserWarning)
        records = import_study(args.path, args.out)
    for r in records:
        number = "-" if r.series_number is None else str(r.series_number)
        what = (f"{r.role or 'no role'} ({r.kind}) -> {r.nifti}" if r.nifti
                else f"not converted: {r.reason}")
        print(f"{number:>5}  {r.description or '(no description)'}: {what}")
    converted = sum(r.nifti is not None for r in records)
    roles = sorted({r.role for r in records if r.role and r.nifti})
    print(f"{len(records)} series: {converted} converted, {len(records) - converted} not; "
          f"roles: {', '.join(roles) or 'none'}; list in {args.out / 'series.json'}")
    return 0
