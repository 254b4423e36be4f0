"""Find the modalities and label map of a case folder, whatever the naming in use.

Recognised layouts (file names without ``.nii``/``.nii.gz``, case-insensitive):

- BraTS 2017-2021: ``*_flair``, ``*_t1``, ``*_t1ce``, ``*_t2``, ``*_seg`` (labels ``brats2021``)
- BraTS 2023+: ``*-t2f``, ``*-t1n``, ``*-t1c``, ``*-t2w``, ``*-seg`` (labels ``brats2023``)
- DeepMedic's BraTS 2015 examples: ``Flair_*``, ``T1c_*``, ``OTMultiClass`` (``brats2015``)
- DeepVoxNet2's BraTS 2018 examples: ``FLAIR``, ``T1``, ``GT_W`` (whole tumour only, ``wt``)
- Medical Segmentation Decathlon Task01: one 4D image (channels FLAIR, T1w, T1-Gd, T2w) and a
  ``label*`` file (``msd``)

Anything else: pass the files explicitly (:func:`explicit_case`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mrimaster.errors import DataError

MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
"""Canonical modality names: FLAIR, pre-contrast T1, T1 with gadolinium, T2. Also the channel
order of the Medical Segmentation Decathlon's 4D brain images (FLAIR, T1w, T1gd, T2w)."""

# (pattern on the lower-case stem, role, convention implied by a label file of that layout)
_PATTERNS: list[tuple[str, str, str | None]] = [
    (r".*_flair$", "flair", None), (r".*_t1$", "t1", None), (r".*_t1ce$", "t1ce", None),
    (r".*_t2$", "t2", None), (r".*_seg$", "seg", "brats2021"),
    (r".*-t2f$", "flair", None), (r".*-t1n$", "t1", None), (r".*-t1c$", "t1ce", None),
    (r".*-t2w$", "t2", None), (r".*-seg$", "seg", "brats2023"),
    (r"^flair_.*", "flair", None), (r"^t1c_.*", "t1ce", None),
    (r"^otmulticlass$", "seg", "brats2015"),
    (r"^flair$", "flair", None), (r"^t1$", "t1", None), (r"^t1ce$", "t1ce", None),
    (r"^t2$", "t2", None), (r"^gt_w$", "seg", "wt"),
]


@dataclass
class Case:
    """One case's files.

    Attributes:
        name: Folder name.
        images: ``{modality: path}`` of 3D volumes.
        image4d: A 4D volume holding channels :data:`MODALITIES`, instead of ``images``.
        seg: Label map, if any.
        convention: Label convention of ``seg`` (see :mod:`mrimaster.segmentation.labels`).
    """

    name: str
    images: dict[str, Path] = field(default_factory=dict)
    image4d: Path | None = None
    seg: Path | None = None
    convention: str | None = None

    def available(self) -> list[str]:
        return list(MODALITIES) if self.image4d else [m for m in MODALITIES if m in self.images]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_4d(path: Path) -> bool:
    """Whether a NIfTI file's header declares several volumes (read lazily: no voxels); an
    unreadable file counts as 4D, so that loading it says what is wrong with it."""
    import nibabel as nib

    try:
        shape = tuple(getattr(nib.load(str(path)), "shape", ()))
    except Exception:  # the loader's own check names the problem
        return True
    return len(shape) == 4 and shape[3] > 1


def find_case(folder: Path, convention: str | None = None) -> Case:
    """Recognise a case folder's layout.

    Raises:
        DataError: not a folder, no NIfTI volumes, or no recognised modality.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"case folder {folder} does not exist")
    volumes = sorted(p for p in folder.iterdir() if p.name.lower().endswith((".nii", ".nii.gz")))
    if not volumes:
        raise DataError(f"no NIfTI volumes (.nii, .nii.gz) in {folder}")
    case = Case(folder.name)
    unknown = []
    for path in volumes:
        stem = _stem(path).lower()
        for pattern, role, conv in _PATTERNS:
            if re.match(pattern, stem):
                if role == "seg":
                    case.seg, case.convention = path, conv
                else:
                    case.images.setdefault(role, path)
                break
        else:
            unknown.append(path)
    if not case.images:
        images = [p for p in unknown if not re.match(r"^(label|seg|brainmask|mask)",
                                                     _stem(p).lower())]
        labels = [p for p in unknown if re.match(r"^(label|seg)", _stem(p).lower())]
        if len(images) == 1 and _is_4d(images[0]):  # MSD Task01: one 4D image
            case.image4d = images[0]
            if labels:
                case.seg, case.convention = labels[0], "msd"
    if not case.images and case.image4d is None:
        raise DataError(f"no recognised modality in {folder} (found: "
                        f"{', '.join(p.name for p in volumes)}): the file names do not say "
                        "which sequence each volume is",
                        "give each volume with --flair/--t1/--t1ce/--t2 (and --seg), or name "
                        "the files like case_flair.nii.gz, case_t1ce.nii.gz")
    if convention:
        case.convention = convention
    return case


def explicit_case(name: str, images: dict[str, Path], seg: Path | None = None,
                  convention: str | None = None) -> Case:
    """A case from explicit per-modality files (for layouts not recognised)."""
    bad = sorted(set(images) - set(MODALITIES))
    if bad:
        raise DataError(f"unknown modality {bad}", f"choose from {', '.join(MODALITIES)}")
    if seg is not None and convention is None:
        raise DataError("a label map needs its convention", "pass --labels")
    return Case(name, dict(images), None, seg, convention)


def find_cases(root: Path) -> list[Case]:
    """Every case folder under ``root`` (recursively), sorted by path."""
    folders = sorted({p.parent for p in Path(root).rglob("*.nii*")})
    if not folders:
        raise DataError(f"no NIfTI volumes found under {root}")
    return [find_case(f) for f in folders]
