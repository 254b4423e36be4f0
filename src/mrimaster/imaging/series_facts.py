"""What one DICOM series' headers say about its acquisition (:class:`SeriesFacts`), read
from the top level or from the functional groups of enhanced multi-frame objects, with the
number of volumes inferred from repeated slice positions; the facts that
:mod:`mrimaster.imaging.roles` decides a role from."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

# --------------------------------------------------------------------------------------------
# Facts: what the headers say, read from the top level or the functional groups
# --------------------------------------------------------------------------------------------

_NO_AGENT = {"", "NONE", "NO", "N", "N/A", "NA", "-", "0", "FALSE", "UNKNOWN"}
FIELDMAP_TOKENS = {"FIELD_MAP", "FIELDMAP", "B0", "B0MAP", "B0_MAP", "FM", "PHASE", "P",
                    "B1", "B1MAP"}
DIFFUSION_MAP_TOKENS = {"ADC", "FA", "TRACE", "TRACEW", "EADC", "EXP", "DIFFUSION_MAP",
                         "COLFA", "TENSOR", "MD", "ISOTROPIC"}
REFORMAT_TOKENS = {"MPR", "MIP", "MINIP", "MNIP", "PROJECTION IMAGE", "REFORMATTED",
                    "SUBTRACT", "SUBTRACTION", "CSA MPR", "CSAPARALLEL", "VOLUME_RENDER"}
PERFUSION_TOKENS = {"PERFUSION", "ASL", "PERF", "CBF", "CBV", "RCBV", "MTT", "TTP", "DSC"}
LOCALIZER_TOKENS = {"LOCALIZER", "LOCALISER", "SCOUT", "SURVEY"}


@dataclass
class SeriesFacts:
    """What one series' headers say about its acquisition (numbers in ms, b in s/mm²)."""

    description: str = ""
    manufacturer: str = ""
    sequence_names: str = ""
    scanning: frozenset[str] = frozenset()
    variant: frozenset[str] = frozenset()
    tr: float | None = None
    te: float | None = None
    ti: float | None = None
    inversion: bool = False
    acquisition_type: str = ""
    contrast_agent: str = ""
    image_type: frozenset[str] = frozenset()
    first_image_type: frozenset[str] = frozenset()  # value 1 of ImageType/FrameType: ORIGINAL..
    complex_component: frozenset[str] = frozenset()
    epi: bool = False
    max_b: float = 0.0
    diffusion_directions: bool = False
    n_volumes: int = 1
    n_images: int = 0
    n_orientations: int = 0
    max_per_orientation: int = 0
    notes: list[str] = field(default_factory=list)


def header_text(value: Any) -> str:
    """A header value as stripped text (bytes as Latin-1, multi-values joined by ``\\``)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip("\x00 ")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Iterable):
        return "\\".join(header_text(v) for v in value)
    return str(value).strip()


def _num(value: Any) -> float | None:
    """The first number in a DICOM value (DS, IS, FD, a multi-value or undecoded bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace").strip("\x00 ").split("\\")[0]
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__")
                                            and not isinstance(value, str)):
        items = list(value)
        if not items:
            return None
        value = items[0]
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _many(value: Any) -> list[Any]:
    """A DICOM value as a list (pydicom returns a single value unwrapped)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _tokens(value: Any) -> list[str]:
    return [t.strip().upper() for t in header_text(value).split("\\") if t.strip()]


def _items(ds: Dataset) -> Iterator[Dataset]:
    """``ds`` itself, then the items of its functional groups' sequences (shared, then per frame).

    Enhanced (multi-frame) objects keep RepetitionTime, EffectiveEchoTime, InversionTimes,
    DiffusionBValue, FrameType... one sequence level down inside each functional group."""
    yield ds
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(groups) or ():
            for elem in group:
                if elem.VR == "SQ":
                    yield from elem.value


def _frames(ds: Dataset) -> list[Dataset]:
    return list(ds.get("PerFrameFunctionalGroupsSequence") or ())


def _frame_get(frame: Dataset, shared: Dataset | None, seq: str, keyword: str) -> Any:
    for holder in (frame, shared):
        if holder is None:
            continue
        for item in holder.get(seq) or ():
            if keyword in item:
                return item.get(keyword)
    return None


def _vendor_b(ds: Dataset, manufacturer: str) -> float | None:
    """b-value from vendor private tags (GE 0043,1039; Siemens 0019,100C; Philips 2001,1003)."""
    tags = {"GE": (0x0043, 0x1039), "SIEMENS": (0x0019, 0x100C), "PHILIPS": (0x2001, 0x1003)}
    for vendor, tag in tags.items():
        if vendor in manufacturer:
            elem = ds.get(tag)
            b = _num(elem.value) if elem is not None else None
            if b is not None and vendor == "GE" and b > 1e8:
                b = b % 100000  # GE adds large offsets to the b-value on some releases
            return b
    return None


def _orientation_key(iop: Any) -> tuple[int, int, int] | None:
    try:
        r = [float(v) for v in iop]
        normal = (r[1] * r[5] - r[2] * r[4], r[2] * r[3] - r[0] * r[5], r[0] * r[4] - r[1] * r[3])
    except (TypeError, ValueError, IndexError):
        return None
    # quantise the slice normal (sign-free) so that slightly tilted stacks count as one
    k = max(range(3), key=lambda i: abs(normal[i]))
    s = 1 if normal[k] >= 0 else -1
    return tuple(round(4 * s * n) for n in normal)  # type: ignore[return-value]


def collect_facts(headers: Sequence[Dataset], n_volumes: int = 1) -> SeriesFacts:
    """Read the attributes :data:`RULES` use from all instances (and frames) of one series."""
    facts = SeriesFacts()
    seen: set[str] = set()
    instances: list[Dataset] = []
    for ds in headers:
        uid = header_text(ds.get("SOPInstanceUID"))
        if uid and uid in seen:
            continue  # the same instance twice (copied files) is not a second volume
        seen.add(uid)
        instances.append(ds)
    if not instances:
        return facts
    first = instances[0]
    facts.manufacturer = header_text(first.get("Manufacturer")).upper()
    facts.description = (header_text(first.get("SeriesDescription"))
                         or header_text(first.get("ProtocolName")))

    scanning: set[str] = set()
    variant: set[str] = set()
    image_type: set[str] = set()
    first_values: set[str] = set()
    complex_c: set[str] = set()
    names: list[str] = []
    trs: list[float] = []
    tes: list[float] = []
    tis: list[float] = []
    agents: list[str] = []
    temporal = 1
    geometry: Counter[tuple[Any, ...]] = Counter()
    per_orientation: Counter[Any] = Counter()

    for ds in instances:
        shared_groups = ds.get("SharedFunctionalGroupsSequence")
        shared = shared_groups[0] if shared_groups else None
        for item in _items(ds):
            scanning.update(_tokens(item.get("ScanningSequence")))
            variant.update(_tokens(item.get("SequenceVariant")))
            for key in ("ImageType", "FrameType"):
                toks = _tokens(item.get(key))
                image_type.update(toks)
                if toks:
                    first_values.add(toks[0])
            complex_c.update(_tokens(item.get("ComplexImageComponent")))
            for key in ("SequenceName", "PulseSequenceName"):
                if item.get(key):
                    names.append(header_text(item.get(key)))
            echo = header_text(item.get("EchoPulseSequence")).upper()
            if echo in ("SPIN", "BOTH"):
                scanning.add("SE")
            if echo in ("GRADIENT", "BOTH"):
                scanning.add("GR")
            if header_text(item.get("EchoPlanarPulseSequence")).upper() == "YES":
                scanning.add("EP")
            if header_text(item.get("InversionRecovery")).upper() == "YES":
                facts.inversion = True
            for key, bucket in (("RepetitionTime", trs), ("EchoTime", tes),
                                ("EffectiveEchoTime", tes), ("InversionTime", tis)):
                v = _num(item.get(key))
                if v is not None and v > 0:
                    bucket.append(v)
            for v in _many(item.get("InversionTimes")):
                ti = _num(v)
                if ti:
                    tis.append(ti)
            agent = header_text(item.get("ContrastBolusAgent"))
            if agent.upper() not in _NO_AGENT:
                agents.append(agent)
            for code in item.get("ContrastBolusAgentSequence") or ():
                meaning = header_text(code.get("CodeMeaning"))
                if meaning.upper() not in _NO_AGENT:
                    agents.append(meaning)
            if header_text(item.get("ContrastBolusAgentAdministered")).upper() == "YES":
                agents.append("administered")
            b = _num(item.get("DiffusionBValue"))
            if b is not None:
                facts.max_b = max(facts.max_b, b)
            directionality = header_text(item.get("DiffusionDirectionality")).upper()
            if directionality in ("DIRECTIONAL", "BMATRIX"):
                facts.diffusion_directions = True
            grad = item.get("DiffusionGradientOrientation")
            if any(abs(_num(g) or 0) > 1e-3 for g in _many(grad)):
                facts.diffusion_directions = True
            ntp = _num(item.get("NumberOfTemporalPositions"))
            if ntp:
                temporal = max(temporal, int(ntp))
            tpi = _num(item.get("TemporalPositionIndex"))
            if tpi:
                temporal = max(temporal, int(tpi))
        ge_name = ds.get((0x0019, 0x109C))
        if ge_name is not None and "GE" in facts.manufacturer:
            names.append(header_text(ge_name.value))
        vb = _vendor_b(ds, facts.manufacturer)
        if vb is not None:
            facts.max_b = max(facts.max_b, vb)

        # geometry: one entry per image (instance or frame) with its position and contrast
        frames = _frames(ds)
        if frames:
            for frame in frames:
                pos = _frame_get(frame, shared, "PlanePositionSequence", "ImagePositionPatient")
                iop = _frame_get(frame, shared, "PlaneOrientationSequence",
                                 "ImageOrientationPatient")
                te = _num(_frame_get(frame, shared, "MREchoSequence", "EffectiveEchoTime"))
                ftype = header_text(_frame_get(frame, shared, "MRImageFrameTypeSequence",
                                               "FrameType"))
                _count(geometry, per_orientation, pos, iop, te, ftype)
        else:
            _count(geometry, per_orientation, ds.get("ImagePositionPatient"),
                   ds.get("ImageOrientationPatient"), _num(ds.get("EchoTime")),
                   header_text(ds.get("ImageType")))

    facts.scanning = frozenset(scanning)
    facts.variant = frozenset(variant)
    facts.image_type = frozenset(image_type)
    facts.first_image_type = frozenset(first_values)
    facts.complex_component = frozenset(complex_c)
    facts.sequence_names = " ".join(dict.fromkeys(names))
    facts.tr = min(trs) if trs else None
    facts.te = min(tes) if tes else None  # the first echo of a multi-echo series
    facts.ti = max(tis) if tis else None
    facts.inversion = facts.inversion or "IR" in scanning or bool(tis)
    facts.acquisition_type = header_text(first.get("MRAcquisitionType")).upper()
    facts.contrast_agent = agents[0] if agents else ""
    names_lower = facts.sequence_names.lower()
    facts.epi = ("EP" in scanning or "EPI" in image_type
                 or bool(re.search(r"(^|[\s*])(ep|epi|epfid|epse|ep2d|ep_b)", names_lower)))
    repeated = max(geometry.values()) if geometry else 1
    facts.n_images = sum(geometry.values()) or len(instances)
    facts.n_volumes = max(int(n_volumes or 1), repeated, temporal)
    facts.n_orientations = len(per_orientation)
    facts.max_per_orientation = max(per_orientation.values()) if per_orientation else 0
    return facts


def _count(geometry: Counter[tuple[Any, ...]], per_orientation: Counter[Any], pos: Any,
           iop: Any, te: float | None, image_type: str) -> None:
    try:
        where = tuple(round(float(v), 1) for v in pos)
    except (TypeError, ValueError):
        return
    orient = _orientation_key(iop)
    geometry[(where, orient, te, image_type)] += 1
    per_orientation[orient] += 1
