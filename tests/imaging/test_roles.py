"""Sequence roles from acquisition attributes (issue 21): synthetic headers per rule, and the
real scanner headers in ``dicom-scanners/`` against the table in the datasets' README."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from mrimaster.imaging.roles import (
    CONDITIONS,
    KEYWORDS,
    KINDS,
    ROLES,
    RULES,
    RoleDecision,
    decide_role,
    description_keyword,
    headers_by_series,
)

_uid = itertools.count(1)
AXIAL = [1, 0, 0, 0, 1, 0]
SAGITTAL = [0, 1, 0, 0, 0, -1]
CORONAL = [1, 0, 0, 0, 0, -1]


def series(desc: str = "", *, slices: int = 20, volumes: int = 1,
           orientation: list[int] | None = None, **attrs: Any) -> list[Dataset]:
    """Headers of one synthetic series: ``volumes`` x ``slices`` instances (no pixel data)."""
    out = []
    for _v in range(volumes):
        for z in range(slices):
            ds = Dataset()
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.{next(_uid)}"
            ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.0"
            ds.Modality = "MR"
            ds.SeriesDescription = desc
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.ImagePositionPatient = [0.0, 0.0, float(z)]
            ds.ImageOrientationPatient = orientation or AXIAL
            for key, value in attrs.items():
                setattr(ds, key, value)
            out.append(ds)
    return out


def why(decision: RoleDecision) -> str:
    return " | ".join(decision.why)


# --- the two examples ----------------------------------------------------------------

def test_resting_state_epi_is_fmri_not_t1() -> None:
    # the description alone was taken as T1 ("REST1"); 4D is inferred from repeated positions
    headers = series("REST1 w SMS PF7-8", slices=6, volumes=4, ScanningSequence="EP",
                     SequenceVariant="SK", RepetitionTime=800, EchoTime=30,
                     MRAcquisitionType="2D")
    d = decide_role(headers, n_volumes=1)
    assert (d.role, d.kind) == (None, "fmri"), d
    assert "EPI" in why(d) and "4 volumes" in why(d)
    assert not d.structural
    # the importer's count is used as well, for a single header
    d = decide_role(series("REST1 w SMS PF7-8", slices=1, ScanningSequence="EP",
                           RepetitionTime=800, EchoTime=30), n_volumes=300)
    assert d.kind == "fmri" and "300 volumes" in why(d)


def test_accelerated_ir_spgr_is_t1() -> None:
    headers = series("Accelerated SAG IR-SPGR", slices=160, orientation=SAGITTAL,
                     ScanningSequence="GR", SequenceVariant=["SS", "SP", "SK"],
                     RepetitionTime=7.6, EchoTime=3.0, InversionTime=450,
                     MRAcquisitionType="3D")
    d = decide_role(headers, n_volumes=1)
    assert (d.role, d.kind) == ("t1", "structural"), d
    assert "TI 450 ms" in why(d) and "inversion-prepared T1" in why(d)
    assert d.structural


# --- structural roles by attributes ------------------------------------------------------------

def test_flair_by_attributes_despite_misleading_description() -> None:
    d = decide_role(series("AX T2 TSE", ScanningSequence=["SE", "IR"], RepetitionTime=9000,
                           EchoTime=120, InversionTime=2500, MRAcquisitionType="2D"), 1)
    assert (d.role, d.kind) == ("flair", "structural"), d
    assert "TI 2500 ms with TR 9000 ms" in d.why[0]
    assert "suggests t2" in why(d) and "decided by the attributes" in why(d)


def test_t1_post_contrast_by_contrast_bolus_agent() -> None:
    d = decide_role(series("AX T1 SE", ScanningSequence="SE", RepetitionTime=550, EchoTime=12,
                           ContrastBolusAgent="GADAVIST"), 1)
    assert (d.role, d.kind) == ("t1ce", "structural"), d
    assert "GADAVIST" in why(d)
    # "NONE" recorded as the agent is no contrast
    d = decide_role(series("AX T1 SE", ScanningSequence="SE", RepetitionTime=550, EchoTime=12,
                           ContrastBolusAgent="NONE"), 1)
    assert d.role == "t1"
    # an MPRAGE with an agent is post-contrast too
    d = decide_role(series("MPRAGE", ScanningSequence=["GR", "IR"], RepetitionTime=2300,
                           EchoTime=2.3, InversionTime=900, ContrastBolusAgent="Gd"), 1)
    assert d.role == "t1ce"


def test_t1_post_contrast_by_description_when_no_agent_recorded() -> None:
    d = decide_role(series("AX T1 +C", ScanningSequence="SE", RepetitionTime=500, EchoTime=10), 1)
    assert d.role == "t1ce" and "post-contrast" in why(d)
    d = decide_role(series("AX T1 PRE contrast", ScanningSequence="SE", RepetitionTime=500,
                           EchoTime=10), 1)
    assert d.role == "t1"


def test_t2_by_attributes() -> None:
    d = decide_role(series("", ScanningSequence="SE", SequenceVariant=["SK", "SP"],
                           RepetitionTime=4000, EchoTime=100, MRAcquisitionType="2D"), 1)
    assert (d.role, d.kind) == ("t2", "structural"), d
    assert "long TR and long TE" in why(d)


def test_t2_star_gradient_echo_and_swi_are_not_roles() -> None:
    d = decide_role(series("AX GRE", ScanningSequence="GR", RepetitionTime=650, EchoTime=20), 1)
    assert d.role is None and "T2*" in why(d)
    d = decide_role(series("SWI_Images", ScanningSequence="GR", RepetitionTime=28,
                           EchoTime=8), 1)
    assert d.role is None and d.kind == "other"


@pytest.mark.parametrize(("desc", "attrs", "expected"), [
    ("t1_mpr_sag_p2_iso", dict(ScanningSequence=["GR", "IR"], SequenceVariant=["SP", "MP"],
                               RepetitionTime=2300, EchoTime=2.98, InversionTime=900), "t1"),
    ("sT1W_3D_TFE", dict(ScanningSequence="GR", RepetitionTime=8.1, EchoTime=3.7), "t1"),
    ("t2_space_dark-fluid_sag", dict(ScanningSequence=["SE", "IR"], RepetitionTime=5000,
                                     EchoTime=387, InversionTime=1800), "flair"),
    ("t2_spc_sag", dict(ScanningSequence="SE", RepetitionTime=3200, EchoTime=408), "t2"),
    ("AX T1 FLAIR", dict(ScanningSequence=["SE", "IR"], RepetitionTime=2200, EchoTime=9,
                         InversionTime=860), "t1"),
    ("AX 3D FSPGR +C", dict(ScanningSequence="GR", RepetitionTime=8, EchoTime=3), "t1ce"),
    ("3D TOF", dict(ScanningSequence="GR", RepetitionTime=22, EchoTime=3.4), None),
    ("COR STIR", dict(ScanningSequence=["SE", "IR"], RepetitionTime=4000, EchoTime=60,
                      InversionTime=160), None),
    ("AX PD", dict(ScanningSequence="SE", RepetitionTime=3000, EchoTime=20), None),
])
def test_vendor_style_series(desc: str, attrs: dict[str, Any], expected: str | None) -> None:
    d = decide_role(series(desc, **attrs), 1)
    assert d.role == expected, d


# --- never structural ---------------------------------------------------------------------------

def test_dwi_with_b1000_is_diffusion() -> None:
    d = decide_role(series("AX T2", ScanningSequence=["EP", "SE"], RepetitionTime=6000,
                           EchoTime=90, DiffusionBValue=1000), 1)
    assert (d.role, d.kind) == (None, "diffusion"), d
    assert "b up to 1000" in why(d) and "suggests t2" in why(d)


def test_siemens_private_b_value_is_diffusion() -> None:
    headers = series("ep2d_something", ScanningSequence="EP", RepetitionTime=5000, EchoTime=80,
                     Manufacturer="SIEMENS")
    for ds in headers:
        ds.add_new((0x0019, 0x100C), "IS", "1000")
    assert decide_role(headers, 1).kind == "diffusion"


def test_adc_and_reformats_are_derived() -> None:
    d = decide_role(series("T2 ADC", ImageType=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"],
                           ScanningSequence=["EP", "SE"], RepetitionTime=6000, EchoTime=90), 1)
    assert (d.role, d.kind) == (None, "derived"), d
    assert "ADC" in why(d)
    d = decide_role(series("T1 MPRAGE COR MPR", ImageType=["DERIVED", "SECONDARY", "MPR"],
                           RepetitionTime=2300, EchoTime=2.3, InversionTime=900), 1)
    assert (d.role, d.kind) == (None, "derived")


def test_localizer_by_image_type_and_by_geometry() -> None:
    d = decide_role(series("3 Plane", slices=3, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
                           ScanningSequence="GR", RepetitionTime=5, EchoTime=2), 1)
    assert (d.role, d.kind) == (None, "localizer"), d
    # nothing but geometry: three orientations, three slices each, T1-like timing
    headers = [ds for o in (AXIAL, SAGITTAL, CORONAL)
               for ds in series("", slices=3, orientation=o, ScanningSequence="GR",
                                RepetitionTime=8, EchoTime=3)]
    d = decide_role(headers, 1)
    assert (d.role, d.kind) == (None, "localizer"), d
    assert "3 slice orientations" in why(d)


def test_field_map_phase_images_are_fieldmap() -> None:
    d = decide_role(series("gre_field_mapping", ImageType=["ORIGINAL", "PRIMARY", "P", "ND"],
                           ScanningSequence="GR", RepetitionTime=400, EchoTime=7.4), 1)
    assert d.kind == "fieldmap"


def test_a_time_series_of_t1_like_images_is_not_structural() -> None:
    d = decide_role(series("dyn T1", volumes=5, ScanningSequence="GR", RepetitionTime=5,
                           EchoTime=2, MRAcquisitionType="3D"), 1)
    assert not d.structural and d.kind == "other" and "5 volumes" in why(d)


def test_enhanced_multiframe_attributes_come_from_functional_groups() -> None:
    def enhanced(per_frame: list[Dataset], **shared_seqs: Dataset) -> Dataset:
        ds = Dataset()
        ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.999"
        ds.SeriesDescription = "sequence 7"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        shared = Dataset()
        for key, item in shared_seqs.items():
            setattr(shared, key, DicomSequence([item]))
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
        return ds

    def frame(z: int, te: float, **seqs: Dataset) -> Dataset:
        f = Dataset()
        f.PlanePositionSequence = DicomSequence([Dataset()])
        f.PlanePositionSequence[0].ImagePositionPatient = [0, 0, z]
        f.MREchoSequence = DicomSequence([Dataset()])
        f.MREchoSequence[0].EffectiveEchoTime = te
        for key, item in seqs.items():
            setattr(f, key, DicomSequence([item]))
        return f

    timing = Dataset()
    timing.RepetitionTime = 9000
    modifier = Dataset()
    modifier.InversionRecovery = "YES"
    modifier.InversionTimes = [2500]
    orient = Dataset()
    orient.ImageOrientationPatient = AXIAL
    flair = enhanced([frame(z, 120) for z in range(5)], MRTimingAndRelatedParametersSequence=timing,
                     MRModifierSequence=modifier, PlaneOrientationSequence=orient)
    d = decide_role([flair], 1)
    assert (d.role, d.kind) == ("flair", "structural"), d

    diff = Dataset()
    diff.DiffusionBValue = 1000
    timing = Dataset()
    timing.RepetitionTime = 5000
    dwi = enhanced([frame(z, 80, MRDiffusionSequence=diff) for z in range(5)],
                   MRTimingAndRelatedParametersSequence=timing, PlaneOrientationSequence=orient)
    assert decide_role([dwi], 1).kind == "diffusion"


# --- descriptions ------------------------------------------------------------------------------

def test_t12_is_not_t1() -> None:
    d = decide_role(series("T12 something"), 1)
    assert d.role is None and not d.structural
    assert "not enough information" in why(d)
    assert description_keyword("T12 sag", "t1") is None
    assert description_keyword("AX T1 axial", "t1") == "T1"
    d = decide_role(series("T1 AXIAL"), 1)
    assert (d.role, d.kind) == ("t1", "structural")


@pytest.mark.parametrize(("desc", "group", "found"), [
    ("sT1W_3D_TFE", "t1", "TFE"), ("AX T2* GRE", "t2", None), ("AX T2* GRE", "nonrole", "T2*"),
    ("Sag T1 FLAIR", "t1flair", "T1 FLAIR"), ("AX T1+C", "postcontrast", "+C"),
    ("REST1 w SMS PF7-8", "fmri", "REST1"), ("FA map", "derived", "FA"),
    ("FA20 3D", "derived", None), ("Posterior fossa T2", "postcontrast", None),
    ("gre_field_mapping", "fieldmap", "field mapping"), ("AAHead_Scout", "localizer", "Scout"),
])
def test_description_keywords_are_word_aware(desc: str, group: str, found: str | None) -> None:
    assert description_keyword(desc, group) == found


def test_description_cannot_make_a_localizer_structural_but_can_keep_it_out() -> None:
    # attributes say EPI time series; a "T1" description does not change that
    d = decide_role(series("T1 AX", volumes=3, ScanningSequence="EP", RepetitionTime=2000,
                           EchoTime=30), 1)
    assert d.kind == "fmri" and "suggests t1" in why(d)
    # a localizer by description stays out even with T1-like timing
    d = decide_role(series("Localizer", ScanningSequence="GR", RepetitionTime=8, EchoTime=3), 1)
    assert d.kind == "localizer"


def test_nothing_decides() -> None:
    assert decide_role([], 1) == RoleDecision(None, "other", decide_role([], 1).why, "")
    assert "not enough information" in why(decide_role([], 1))
    d = decide_role(series("", ScanningSequence="SE", RepetitionTime=1500, EchoTime=45), 1)
    assert (d.role, d.kind) == (None, "structural") and "not enough information" in why(d)


# --- the rule table ----------------------------------------------------------------------------

def test_rule_table_is_consistent_and_kinds_come_before_roles() -> None:
    names = [r.name for r in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert rule.kind in KINDS and (rule.role is None or rule.role in ROLES)
        assert rule.role is None or rule.kind == "structural"
        assert rule.why
        for cond in rule.when + rule.unless:
            assert cond[5:] in KEYWORDS if cond.startswith("desc:") else cond in CONDITIONS
    first_role = min(i for i, r in enumerate(RULES) if r.role is not None)
    assert all(r.kind in ("structural", "other") for r in RULES[first_role:])
    assert {r.role for r in RULES} >= set(ROLES)


# --- real scanner headers (dicom-scanners/, the README's table) -------------------------------

MAX_PER_FOLDER = 200  # files read per leaf folder: enough for every series there


def _decisions(root: Path) -> dict[str, RoleDecision]:
    files: list[Path] = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()}):
        files += sorted(p for p in folder.iterdir() if p.is_file())[:MAX_PER_FOLDER]
    out = {}
    for headers in headers_by_series(files, max_files=5000).values():
        name = str(headers[0].get("SeriesDescription", ""))
        out[f"{name} ({headers[0].SeriesInstanceUID})"] = decide_role(headers, 1)
    assert out, f"no DICOM series under {root}"
    return out


@pytest.mark.realdata
@pytest.mark.parametrize(("folder", "expected"), [
    ("ge-3d-t1-phantom", {("t1", "structural")}),
    ("ge-dwi-4d", {(None, "diffusion")}),
    ("nih-epi", {(None, "fmri")}),
    ("enhanced-multiframe", {(None, "fieldmap"), (None, "fmri")}),
    ("siemens-mosaic-orientation", {(None, "fmri")}),
])
def test_real_scanner_series(data_root: Path, folder: str, expected: set[Any]) -> None:
    decisions = _decisions(data_root / "dicom-scanners" / folder)
    got = {(d.role, d.kind) for d in decisions.values()}
    assert got == expected, {k: (d.role, d.kind, d.why) for k, d in decisions.items()}
    for d in decisions.values():
        assert d.why and d.rule
        assert d.structural == (folder == "ge-3d-t1-phantom")


@pytest.mark.realdata
def test_real_enhanced_multiframe_is_read_not_misdiagnosed(data_root: Path) -> None:
    root = data_root / "dicom-scanners" / "enhanced-multiframe"
    # the Philips B0 map has T1-like timing (3D gradient echo, TR 3.8 ms, TE 1.5 ms): only its
    # FIELD_MAP frame types keep it out; the Siemens XA10 series is a 4-volume resting-state EPI
    philips = headers_by_series(sorted((root / "Philips").rglob("*.dcm")))
    (d,) = [decide_role(h, 1) for h in philips.values()]
    assert (d.kind, d.rule) == ("fieldmap", "fieldmap-type") and "FIELD_MAP" in why(d)
    siemens = headers_by_series(sorted((root / "Siemens").rglob("*.dcm")))
    (d,) = [decide_role(h, 1) for h in siemens.values()]
    assert (d.kind, d.rule) == ("fmri", "fmri-epi-4d") and "4 volumes" in why(d)
