"""Sequence roles (FLAIR, T1, T1-Gd, T2) from a series' acquisition attributes.

A series' role is decided from what the scanner recorded about the acquisition: ScanningSequence
and SequenceVariant, TR/TE/TI, MRAcquisitionType, ContrastBolusAgent, ImageType (derived,
localizer, MPR, field map...), diffusion b-values (standard and vendor tags), the number of
volumes and the slice geometry. The series description is one hint among them.

The rules are data: :data:`RULES` is an ordered table, first match wins. Each rule names the
conditions that must all hold (``when``), those that must not (``unless``), what it decides and
a human-readable explanation. Conditions are either attribute predicates (:data:`CONDITIONS`) or
``desc:<group>``, a match of the series description against one of the keyword groups in
:data:`KEYWORDS` (case-insensitive, word-aware: "T1" does not match "T12").

The table puts every non-structural kind first (attribute rules, then description rules), so a
series that is a localizer, derived, a field map, diffusion, perfusion, fMRI or any time series
never gets a structural role, whatever its description says. Structural roles come after, from
attributes first and from the description only where the attributes do not decide. When the
description suggests something else than the attributes decided, ``why`` says so.

Volumes: ``decide_role(headers, n_volumes)`` uses the larger of the ``n_volumes`` it is given and
the count it infers from the headers (instances or frames repeated at one slice position with the
same echo time and image type; NumberOfTemporalPositions; TemporalPositionIndex), so an importer
that passes 1 still gets a 4D series recognised.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

ROLES = ("flair", "t1", "t1ce", "t2")
KINDS = ("structural", "diffusion", "fmri", "perfusion", "localizer", "fieldmap", "derived",
         "other")


@dataclass(frozen=True)
class RoleDecision:
    """What a series is: ``role`` (one of :data:`ROLES` or ``None``), its ``kind`` (one of
    :data:`KINDS`) and ``why``: the attributes that decided, human-readable."""

    role: str | None
    kind: str
    why: tuple[str, ...]
    rule: str = ""  # the name of the rule in RULES that decided ("" when none did)

    @property
    def structural(self) -> bool:
        """True when the series may feed the model as one of its structural inputs."""
        return self.kind == "structural" and self.role is not None


# --------------------------------------------------------------------------------------------
# Description keywords. Each entry is a regular expression matched case-insensitively as a whole
# word: not preceded or followed by a letter or digit ("_", "-", " " and "." separate words).
# --------------------------------------------------------------------------------------------

KEYWORDS: dict[str, tuple[str, ...]] = {
    "localizer": (r"loc", r"locali[sz]er", r"scout", r"survey", r"3[- ]?plane", r"tri[- ]?pilot",
                  r"aa[a-z]*scout", r"pilot", r"plan(ning)?scan"),
    "calibration": (r"calibration", r"cal", r"asset", r"pure", r"sense[- ]?ref", r"refscan",
                    r"coil[- ]?survey", r"prescan", r"ref"),
    # not "MPR": Siemens names MPRAGE protocols "t1_mpr_sag"; reformats say so in ImageType
    "derived": (r"adc", r"e?adc", r"fa", r"colfa", r"trace", r"tracew", r"exp", r"mip",
                r"minip", r"mnip", r"reformat(ted)?", r"subtraction"),
    "diffusion": (r"dwi", r"dti", r"diff(usion)?", r"tensor", r"hardi", r"dki", r"ep_b\d*",
                  r"b\d{3,4}", r"resolve"),
    "perfusion": (r"perf(usion)?", r"p?c?asl", r"pasl", r"dsc", r"dce", r"pwi", r"r?cbv", r"cbf",
                  r"mtt", r"ttp", r"tmax", r"bolus"),
    "fmri": (r"rest(ing)?[-_ ]?(state)?\d*", r"rs[-_ ]?fmri", r"t?fmri", r"bold", r"moco\w*",
             r"epi\d*", r"ep2d", r"task\d*"),
    "fieldmap": (r"field[-_ ]?map(ping)?", r"fmap", r"b0[-_ ]?map", r"b0", r"b1[-_ ]?map",
                 r"topup"),
    "nonrole": (r"swi", r"swan", r"swip", r"t2\*", r"t2[-_ ]?star", r"hemo", r"tof", r"mra",
                r"mrv", r"angio", r"venogram", r"svs", r"csi", r"mrs", r"spectro\w*", r"cine",
                r"stir"),
    "flair": (r"t2[-_ ]?flair", r"flair", r"dark[-_ ]?fluid", r"tirm", r"darkfluid"),
    "t1flair": (r"t1[-_ ]?flair", r"t1f"),
    "t1": (r"t1w?", r"t1[-_ ]?weighted", r"mp[-_ ]?rage", r"ir[-_ ]?f?spgr", r"f?spgr", r"bravo",
           r"t1[-_ ]?tfe", r"tfe", r"t1ff?e", r"vibe", r"mp2rage", r"t1[a-z]*"),
    "postcontrast": (r"\+\s?c", r"c\+", r"\+\s?gd", r"gd", r"gad", r"gado(linium)?", r"post",
                     r"post[-_ ]?contrast", r"ce", r"t1c", r"t1ce", r"t1[-_ ]?gd", r"contrast",
                     r"mdc", r"km"),
    "precontrast": (r"pre", r"pre[-_ ]?contrast", r"non", r"non[-_ ]?contrast", r"without",
                    r"wo", r"native?", r"no[-_ ]?contrast", r"t1n"),
    "t2": (r"t2w?", r"t2[-_ ]?weighted", r"t2[-_ ]?tse", r"t2[-_ ]?fse"),
    "pd": (r"pd", r"pdw", r"proton[-_ ]?density"),
}

# A keyword is a whole word: no letter, digit or "*" right before or after it ("T2*" is not T2).
_WORD = "(?<![a-z0-9]){}(?![a-z0-9*])"
_PLUS = "{}(?![a-z0-9])"  # keywords starting with "+" may follow a word ("T1+C")
_COMPILED: dict[str, tuple[re.Pattern[str], ...]] = {
    group: tuple(re.compile((_PLUS if p.startswith(r"\+") else _WORD).format(p), re.IGNORECASE)
                 for p in patterns)
    for group, patterns in KEYWORDS.items()
}


def description_keyword(description: str, group: str) -> str | None:
    """The text in ``description`` matching a keyword of ``group`` (word-aware), or ``None``."""
    text = description.replace("_", " ")
    for pattern in _COMPILED[group]:
        m = pattern.search(text)
        if m:
            return m.group(0)
    return None


# --------------------------------------------------------------------------------------------
# Facts: what the headers say, read from the top level or the functional groups
# --------------------------------------------------------------------------------------------

_NO_AGENT = {"", "NONE", "NO", "N", "N/A", "NA", "-", "0", "FALSE", "UNKNOWN"}
_FIELDMAP_TOKENS = {"FIELD_MAP", "FIELDMAP", "B0", "B0MAP", "B0_MAP", "FM", "PHASE", "P",
                    "B1", "B1MAP"}
_DIFFUSION_MAP_TOKENS = {"ADC", "FA", "TRACE", "TRACEW", "EADC", "EXP", "DIFFUSION_MAP",
                         "COLFA", "TENSOR", "MD", "ISOTROPIC"}
_REFORMAT_TOKENS = {"MPR", "MIP", "MINIP", "MNIP", "PROJECTION IMAGE", "REFORMATTED",
                    "SUBTRACT", "SUBTRACTION", "CSA MPR", "CSAPARALLEL", "VOLUME_RENDER"}
_PERFUSION_TOKENS = {"PERFUSION", "ASL", "PERF", "CBF", "CBV", "RCBV", "MTT", "TTP", "DSC"}
_LOCALIZER_TOKENS = {"LOCALIZER", "LOCALISER", "SCOUT", "SURVEY"}


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


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace").strip("\x00 ")
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Iterable):
        return "\\".join(_text(v) for v in value)
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
    return [t.strip().upper() for t in _text(value).split("\\") if t.strip()]


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
        uid = _text(ds.get("SOPInstanceUID"))
        if uid and uid in seen:
            continue  # the same instance twice (copied files) is not a second volume
        seen.add(uid)
        instances.append(ds)
    if not instances:
        return facts
    first = instances[0]
    facts.manufacturer = _text(first.get("Manufacturer")).upper()
    facts.description = _text(first.get("SeriesDescription")) or _text(first.get("ProtocolName"))

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
                    names.append(_text(item.get(key)))
            echo = _text(item.get("EchoPulseSequence")).upper()
            if echo in ("SPIN", "BOTH"):
                scanning.add("SE")
            if echo in ("GRADIENT", "BOTH"):
                scanning.add("GR")
            if _text(item.get("EchoPlanarPulseSequence")).upper() == "YES":
                scanning.add("EP")
            if _text(item.get("InversionRecovery")).upper() == "YES":
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
            agent = _text(item.get("ContrastBolusAgent"))
            if agent.upper() not in _NO_AGENT:
                agents.append(agent)
            for code in item.get("ContrastBolusAgentSequence") or ():
                meaning = _text(code.get("CodeMeaning"))
                if meaning.upper() not in _NO_AGENT:
                    agents.append(meaning)
            if _text(item.get("ContrastBolusAgentAdministered")).upper() == "YES":
                agents.append("administered")
            b = _num(item.get("DiffusionBValue"))
            if b is not None:
                facts.max_b = max(facts.max_b, b)
            if _text(item.get("DiffusionDirectionality")).upper() in ("DIRECTIONAL", "BMATRIX"):
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
            names.append(_text(ge_name.value))
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
                ftype = _text(_frame_get(frame, shared, "MRImageFrameTypeSequence", "FrameType"))
                _count(geometry, per_orientation, pos, iop, te, ftype)
        else:
            _count(geometry, per_orientation, ds.get("ImagePositionPatient"),
                   ds.get("ImageOrientationPatient"), _num(ds.get("EchoTime")),
                   _text(ds.get("ImageType")))

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
    facts.acquisition_type = _text(first.get("MRAcquisitionType")).upper()
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


# --------------------------------------------------------------------------------------------
# Conditions over the facts
# --------------------------------------------------------------------------------------------

def _has(tokens: set[str]) -> Callable[[SeriesFacts], bool]:
    return lambda f: bool(f.image_type & tokens)


def _gre_only(f: SeriesFacts) -> bool:
    return "GR" in f.scanning and "SE" not in f.scanning


CONDITIONS: dict[str, Callable[[SeriesFacts], bool]] = {
    "type_localizer": _has(_LOCALIZER_TOKENS),
    "type_diffusion_map": _has(_DIFFUSION_MAP_TOKENS),
    "type_reformat": _has(_REFORMAT_TOKENS),
    "type_fieldmap": lambda f: bool(f.image_type & _FIELDMAP_TOKENS)
    or bool(f.complex_component & {"PHASE", "REAL", "IMAGINARY"}),
    "type_perfusion": _has(_PERFUSION_TOKENS),
    "derived": lambda f: "DERIVED" in f.first_image_type
    and "ORIGINAL" not in f.first_image_type,
    "several_orientations": lambda f: f.n_orientations >= 2,
    "few_per_orientation": lambda f: 0 < f.max_per_orientation <= 20,
    "diffusion_weighted": lambda f: f.max_b > 0 or f.diffusion_directions,
    "four_d": lambda f: f.n_volumes > 1,
    "epi": lambda f: f.epi,
    "contrast_agent": lambda f: bool(f.contrast_agent),
    "gre_only": _gre_only,
    "inversion": lambda f: f.inversion,
    "long_ti": lambda f: f.ti is not None and f.ti >= 1400,
    "flair_ti": lambda f: f.ti is not None and 1400 <= f.ti <= 3500,
    "t1_ti": lambda f: f.ti is not None and 300 <= f.ti < 1400,
    "short_ti": lambda f: f.ti is not None and f.ti < 300,
    "long_tr": lambda f: f.tr is not None and f.tr >= 4000,
    "tr_2000": lambda f: f.tr is not None and f.tr >= 2000,
    "short_tr": lambda f: f.tr is not None and f.tr <= 800,
    "te_30": lambda f: f.te is not None and f.te <= 30,
    "te_12": lambda f: f.te is not None and f.te < 12,
    "gre_long_te": lambda f: _gre_only(f) and f.te is not None and f.te >= 12,
    "long_te": lambda f: f.te is not None and 60 <= f.te <= 500,
    "pd_te": lambda f: f.te is not None and f.te <= 40,
    "te_30_plus": lambda f: f.te is not None and f.te > 30,
    "timing": lambda f: f.tr is not None or f.te is not None,
    "original": lambda f: "ORIGINAL" in f.first_image_type or not f.first_image_type,
}


# --------------------------------------------------------------------------------------------
# The rule table: ordered, first match wins. ``why`` is formatted with the facts' fields
# ({tr}, {te}, {ti}, {b}, {volumes}, {agent}, {image_type}, {desc}, {kw}: the matched keyword).
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    role: str | None
    when: tuple[str, ...]
    why: str
    unless: tuple[str, ...] = ()

    @property
    def by_description(self) -> bool:
        return any(c.startswith("desc:") for c in self.when)


RULES: tuple[Rule, ...] = (
    # --- never structural: decided by attributes ------------------------------------------
    Rule("localizer-type", "localizer", None, ("type_localizer",),
         "ImageType {image_type}: a localizer"),
    Rule("localizer-geometry", "localizer", None, ("several_orientations", "few_per_orientation"),
         "{orientations} slice orientations with at most {per_orientation} images each: "
         "a multi-plane localizer"),
    Rule("mixed-orientations", "other", None, ("several_orientations",),
         "{orientations} slice orientations in one series: not one volume"),
    Rule("diffusion-map", "derived", None, ("type_diffusion_map",),
         "ImageType {image_type}: a map computed from diffusion images (ADC/FA/trace)"),
    Rule("reformat", "derived", None, ("type_reformat",),
         "ImageType {image_type}: a reformat or projection (MPR/MIP), not an acquisition"),
    Rule("fieldmap-type", "fieldmap", None, ("type_fieldmap",),
         "ImageType/FrameType {image_type}: field map or phase images"),
    Rule("perfusion-type", "perfusion", None, ("type_perfusion",),
         "ImageType {image_type}: perfusion"),
    Rule("derived", "derived", None, ("derived",),
         "ImageType {image_type}: DERIVED, computed from other images"),
    Rule("diffusion", "diffusion", None, ("diffusion_weighted",),
         "diffusion weighting (b up to {b} s/mm², {volumes} volume(s)): diffusion imaging"),
    Rule("perfusion-4d", "perfusion", None, ("four_d", "desc:perfusion"),
         "{volumes} volumes and the description names perfusion ({kw})"),
    Rule("perfusion-dsc", "perfusion", None, ("four_d", "epi", "contrast_agent"),
         "{volumes} EPI volumes with contrast agent {agent}: dynamic susceptibility perfusion"),
    Rule("fmri-epi-4d", "fmri", None, ("four_d", "epi"),
         "EPI readout ({scanning}) with {volumes} volumes: an fMRI-style time series"),
    Rule("fmri-4d-desc", "fmri", None, ("four_d", "desc:fmri"),
         "{volumes} volumes and the description names fMRI ({kw})"),
    Rule("time-series", "other", None, ("four_d",),
         "{volumes} volumes at the same positions: a time series, not one structural volume"),
    # --- never structural: decided by the description -------------------------------------
    Rule("localizer-desc", "localizer", None, ("desc:localizer",),
         "description names a localizer ({kw})"),
    Rule("calibration-desc", "other", None, ("desc:calibration",),
         "description names a calibration or reference scan ({kw})"),
    Rule("derived-desc", "derived", None, ("desc:derived",),
         "description names a derived image ({kw})"),
    Rule("diffusion-desc", "diffusion", None, ("desc:diffusion",),
         "description names diffusion imaging ({kw})"),
    Rule("perfusion-desc", "perfusion", None, ("desc:perfusion",),
         "description names perfusion ({kw})"),
    Rule("fmri-desc", "fmri", None, ("desc:fmri",), "description names fMRI/EPI ({kw})"),
    Rule("fieldmap-desc", "fieldmap", None, ("desc:fieldmap",),
         "description names a field map ({kw})"),
    Rule("nonrole-desc", "other", None, ("desc:nonrole",),
         "description names {kw}: not one of the model's structural inputs"),
    Rule("epi-single", "other", None, ("epi",),
         "EPI readout ({scanning}): not a structural acquisition"),
    # --- structural, decided by attributes -------------------------------------------------
    Rule("flair-ir", "structural", "flair", ("inversion", "flair_ti", "long_tr"),
         "TI {ti} with TR {tr}: inversion recovery with long TI -> FLAIR"),
    Rule("stir", "structural", None, ("inversion", "short_ti", "te_30_plus"),
         "TI {ti} with TE {te}: short-TI inversion recovery (STIR), not one of the roles"),
    Rule("t1ce-ir-agent", "structural", "t1ce", ("inversion", "t1_ti", "te_30", "contrast_agent"),
         "TI {ti}, TE {te}: inversion-prepared T1 (MPRAGE/IR-SPGR/BRAVO); "
         "ContrastBolusAgent {agent} -> T1 post-contrast"),
    Rule("t1ce-ir-desc", "structural", "t1ce", ("inversion", "t1_ti", "te_30",
                                                "desc:postcontrast"),
         "TI {ti}, TE {te}: inversion-prepared T1; description says post-contrast ({kw})",
         unless=("desc:precontrast",)),
    Rule("t1-ir", "structural", "t1", ("inversion", "t1_ti", "te_30"),
         "TI {ti}, TE {te}: inversion-prepared T1 (MPRAGE/IR-SPGR/BRAVO/TFE) -> T1"),
    Rule("t2star", "other", None, ("gre_long_te",), "gradient echo with TE {te}: T2*-weighted "
         "(T2*/SWI), not one of the roles", unless=("inversion",)),
    Rule("t1ce-agent", "structural", "t1ce", ("short_tr", "te_30", "contrast_agent"),
         "TR {tr}, TE {te}: short TR and TE -> T1; ContrastBolusAgent {agent} -> T1 post-contrast",
         unless=("long_ti",)),
    Rule("t1ce-short-desc", "structural", "t1ce", ("short_tr", "te_30", "desc:postcontrast"),
         "TR {tr}, TE {te}: short TR and TE -> T1; description says post-contrast ({kw})",
         unless=("long_ti", "desc:precontrast")),
    Rule("t1-short", "structural", "t1", ("short_tr", "te_30"),
         "TR {tr}, TE {te}: short TR and TE -> T1", unless=("long_ti",)),
    Rule("t2", "structural", "t2", ("tr_2000", "long_te"),
         "TR {tr}, TE {te}: long TR and long TE without inversion -> T2",
         unless=("inversion",)),
    Rule("pd", "structural", None, ("tr_2000", "pd_te"),
         "TR {tr}, TE {te}: long TR, short TE -> proton density, not one of the roles",
         unless=("inversion",)),
    # --- structural, decided by the description (attributes missing or undecided) ---------
    Rule("t1flair-desc", "structural", "t1", ("desc:t1flair",),
         "description names T1-weighted FLAIR ({kw}) -> T1"),
    Rule("flair-desc", "structural", "flair", ("desc:flair",), "description names FLAIR ({kw})"),
    Rule("t1ce-desc-agent", "structural", "t1ce", ("desc:t1", "contrast_agent"),
         "description names T1 ({kw}); ContrastBolusAgent {agent} -> T1 post-contrast"),
    Rule("t1ce-desc", "structural", "t1ce", ("desc:t1", "desc:postcontrast"),
         "description names T1 post-contrast ({kw})", unless=("desc:precontrast",)),
    Rule("t1-desc", "structural", "t1", ("desc:t1",), "description names T1 ({kw})"),
    Rule("t2-desc", "structural", "t2", ("desc:t2",), "description names T2 ({kw})"),
    Rule("pd-desc", "structural", None, ("desc:pd",),
         "description names proton density ({kw}), not one of the roles"),
    # --- nothing decided -------------------------------------------------------------------
    Rule("undecided-original", "structural", None, ("timing", "original"),
         "not enough information: TR {tr}, TE {te}, TI {ti} and description {desc} "
         "match no rule"),
)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g} ms"


def _fields(f: SeriesFacts, kw: str) -> dict[str, str]:
    return {"tr": _ms(f.tr), "te": _ms(f.te), "ti": _ms(f.ti), "b": f"{f.max_b:g}",
            "volumes": str(f.n_volumes), "agent": repr(f.contrast_agent),
            "image_type": "\\".join(sorted(f.image_type)) or "-", "desc": repr(f.description),
            "kw": repr(kw), "orientations": str(f.n_orientations),
            "per_orientation": str(f.max_per_orientation),
            "scanning": "\\".join(sorted(f.scanning)) or f.sequence_names or "EPI"}


def _matches(rule: Rule, facts: SeriesFacts) -> tuple[bool, str]:
    """Whether ``rule`` holds, and the description keyword that made it (if any)."""
    kw = ""
    for cond in rule.when:
        if cond.startswith("desc:"):
            found = description_keyword(facts.description, cond[5:])
            if found is None:
                return False, ""
            kw = kw or found
        elif not CONDITIONS[cond](facts):
            return False, ""
    for cond in rule.unless:
        if cond.startswith("desc:"):
            if description_keyword(facts.description, cond[5:]) is not None:
                return False, ""
        elif CONDITIONS[cond](facts):
            return False, ""
    return True, kw


def _description_hint(facts: SeriesFacts) -> tuple[Rule, str] | None:
    """The first description-only rule that the description matches (attributes ignored)."""
    for rule in RULES:
        if rule.when and all(c.startswith("desc:") for c in rule.when):
            ok, kw = _matches(rule, facts)
            if ok:
                return rule, kw
    return None


def _label(role: str | None, kind: str) -> str:
    return role if role is not None else kind


def decide_facts(facts: SeriesFacts) -> RoleDecision:
    """Apply :data:`RULES` to already collected facts."""
    for rule in RULES:
        ok, kw = _matches(rule, facts)
        if not ok:
            continue
        why = [rule.why.format(**_fields(facts, kw))]
        if not rule.by_description and facts.description:
            hint = _description_hint(facts)
            if hint is not None:
                h_rule, h_kw = hint
                if (h_rule.role, h_rule.kind) != (rule.role, rule.kind):
                    why.append(f"description {facts.description!r} suggests "
                               f"{_label(h_rule.role, h_rule.kind)} ({h_kw!r}); "
                               "decided by the attributes")
        return RoleDecision(rule.role, rule.kind, tuple(why + facts.notes), rule.name)
    return RoleDecision(None, "other", (
        f"not enough information: no timing attributes and description "
        f"{facts.description!r} names no role",), "")


def decide_role(headers: Sequence[pydicom.Dataset], n_volumes: int = 1) -> RoleDecision:
    """Decide the role of one series from its instances' headers (pixel data not needed).

    ``headers``: every instance of the series (an enhanced multi-frame file is one dataset whose
    functional groups are read). ``n_volumes``: how many volumes the importer found at the same
    positions (>1: 4D); the count inferred from the headers is used when it is larger."""
    return decide_facts(collect_facts(headers, n_volumes))


def headers_by_series(files: Iterable[Path], max_files: int = 2000) -> dict[str, list[Dataset]]:
    """Read the headers (no pixel data) of up to ``max_files`` DICOM files, grouped by
    SeriesInstanceUID in file order; files that are not DICOM are skipped."""
    series: dict[str, list[Dataset]] = {}
    for n, path in enumerate(sorted(files)):
        if n >= max_files:
            break
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        series.setdefault(_text(ds.get("SeriesInstanceUID")) or str(path.parent), []).append(ds)
    return series
