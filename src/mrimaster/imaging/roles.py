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

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mrimaster.imaging.series_facts import (
    DIFFUSION_MAP_TOKENS,
    FIELDMAP_TOKENS,
    LOCALIZER_TOKENS,
    PERFUSION_TOKENS,
    REFORMAT_TOKENS,
    SeriesFacts,
    collect_facts,
    header_text,
)

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
# Conditions over the facts
# --------------------------------------------------------------------------------------------

def _has(tokens: set[str]) -> Callable[[SeriesFacts], bool]:
    return lambda f: bool(f.image_type & tokens)


def _gre_only(f: SeriesFacts) -> bool:
    return "GR" in f.scanning and "SE" not in f.scanning


CONDITIONS: dict[str, Callable[[SeriesFacts], bool]] = {
    "type_localizer": _has(LOCALIZER_TOKENS),
    "type_diffusion_map": _has(DIFFUSION_MAP_TOKENS),
    "type_reformat": _has(REFORMAT_TOKENS),
    "type_fieldmap": lambda f: bool(f.image_type & FIELDMAP_TOKENS)
    or bool(f.complex_component & {"PHASE", "REAL", "IMAGINARY"}),
    "type_perfusion": _has(PERFUSION_TOKENS),
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
        uid = header_text(ds.get("SeriesInstanceUID")) or str(path.parent)
        series.setdefault(uid, []).append(ds)
    return series
