"""The DICOM receiver (C-STORE / C-ECHO SCP) with pynetdicom as the sending peer, on loopback:
the allow-list, C-ECHO, a released association's instances becoming one study once stable, an
aborted association leaving nothing, the spool limit, and the configuration's refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mrimaster.pacs.receiver import (
    ReceivedStudy,
    Receiver,
    ReceiverConfig,
    ReceiverError,
    parse_titles,
    study_key,
)

MR = "1.2.840.10008.5.1.4.1.1.4"


def mr_slice(study_uid: str, series_uid: str, n: int, patient: str = "RX-0001") -> Dataset:
    """A small MR Image Storage instance (16 x 16, uint16)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MR
    ds.SOPClassUID, ds.SOPInstanceUID = MR, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.PatientName, ds.Modality = patient, "Test^Patient", "MR"
    ds.InstanceNumber = n
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (np.arange(256, dtype=np.uint16) * n).tobytes()
    return ds


def settled(r: Receiver) -> None:
    """Wait until the receiver's server thread has closed every association (its release
    and close events run there, after the sender's ``release()`` returned)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any((r.spool / "partial").iterdir()):
        time.sleep(0.05)
    assert not any((r.spool / "partial").iterdir()), "an association is still open"


def sender(title: str) -> Any:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=title)
    ae.add_requested_context(MR, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[Receiver, list[ReceivedStudy], tuple[str, int]]]:
    """A receiver on a free port that hands on only when the test asks, keeping copies of
    what it handed on under ``tmp_path/kept`` (the spooled files are deleted)."""
    got: list[ReceivedStudy] = []

    def keep(study: ReceivedStudy) -> None:
        got.append(study)
        kept = tmp_path / "kept" / study.folder.name
        kept.mkdir(parents=True)
        for p in study.files:
            (kept / p.name).write_bytes(p.read_bytes())

    r = Receiver(ReceiverConfig(allow=("SCANNER1", "PACS"), port=0, stable_s=0),
                 tmp_path / "spool", keep)
    address = r.start(hand_on=False)
    yield r, got, address
    r.stop()


def test_echo_answers_allowed_titles_and_rejects_others(receiver: Any) -> None:
    _, _, (host, port) = receiver
    assoc = sender("SCANNER1").associate(host, port, ae_title="MRIMASTER")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    stranger = sender("INTRUDER").associate(host, port, ae_title="MRIMASTER")
    assert stranger.is_rejected and not stranger.is_established
    wrong_name = sender("SCANNER1").associate(host, port, ae_title="OTHER")
    assert wrong_name.is_rejected


def test_released_instances_become_one_study_aborted_ones_nothing(
        receiver: Any, tmp_path: Path) -> None:
    r, received, (host, port) = receiver
    study, other = generate_uid(), generate_uid()
    series = [generate_uid(), generate_uid()]
    # two associations of one study (each series on its own, as scanners do) and one aborted
    for s in series:
        assoc = sender("SCANNER1").associate(host, port, ae_title="MRIMASTER")
        for n in (1, 2):
            assert assoc.send_c_store(mr_slice(study, s, n)).Status == 0x0000
        assoc.release()
    cut = sender("PACS").associate(host, port, ae_title="MRIMASTER")
    assert cut.send_c_store(mr_slice(other, generate_uid(), 1)).Status == 0x0000
    cut.abort()
    settled(r)  # the aborted instance is gone
    folders = list((r.spool / "studies").iterdir())
    assert [f.name.split("-")[0] for f in folders] == [study_key(study)]
    assert study not in str(folders[0])  # the folder's name does not reveal the UID
    assert r.hand_on() == 1
    [got] = received
    assert got.calling_aets == ["SCANNER1"] and len(got.files) == 4
    kept = sorted((tmp_path / "kept" / got.folder.name).glob("*.dcm"))
    read = [pydicom.dcmread(p) for p in kept]
    assert {d.StudyInstanceUID for d in read} == {study}
    assert sorted((d.SeriesInstanceUID, int(d.InstanceNumber)) for d in read) == sorted(
        (s, n) for s in series for n in (1, 2))
    assert (read[0].pixel_array.astype(int) == np.arange(256).reshape(16, 16)
            * int(read[0].InstanceNumber)).all()  # the pixels arrive intact
    assert not any((r.spool / "studies").iterdir())  # handed on: deleted


def send_one(config: ReceiverConfig, spool: Path, on_study: Any) -> Receiver:
    """A receiver (no hand-on loop) that got one instance from SCANNER1, then stopped."""
    r = Receiver(config, spool, on_study)
    host, port = r.start(hand_on=False)
    try:
        assoc = sender("SCANNER1").associate(host, port, ae_title="MRIMASTER")
        assert assoc.send_c_store(mr_slice(generate_uid(), generate_uid(), 1)).Status == 0
        assoc.release()
        settled(r)
    finally:
        r.stop()
    return r


def test_a_study_is_handed_on_only_once_stable(tmp_path: Path) -> None:
    got: list[ReceivedStudy] = []
    r = send_one(ReceiverConfig(allow=("SCANNER1",), port=0, stable_s=3600), tmp_path / "s",
                 got.append)
    assert r.hand_on() == 0 and got == []  # arrived just now: not complete yet
    assert r.hand_on(now=time.time() + 3601) == 1 and len(got) == 1


def test_a_full_spool_refuses_with_out_of_resources(tmp_path: Path) -> None:
    r = Receiver(ReceiverConfig(allow=("SCANNER1",), port=0, max_spool_bytes=1000),
                 tmp_path / "s", lambda s: None)
    host, port = r.start()
    try:
        assoc = sender("SCANNER1").associate(host, port, ae_title="MRIMASTER")
        status = assoc.send_c_store(mr_slice(generate_uid(), generate_uid(), 1))
        assoc.release()
    finally:
        r.stop()
    assert status.Status == 0xA700
    assert not list((tmp_path / "s").rglob("*.dcm"))


def test_a_failing_hand_on_keeps_the_study_for_a_retry_then_gives_up(tmp_path: Path) -> None:
    calls: list[int] = []

    def down_twice(study: ReceivedStudy) -> None:
        calls.append(len(study.files))
        if len(calls) <= 2:
            raise RuntimeError("the database is down")

    r = send_one(ReceiverConfig(allow=("SCANNER1",), port=0, stable_s=0.5), tmp_path / "s",
                 down_twice)
    time.sleep(0.6)
    assert r.hand_on() == 0 and calls == [1]
    assert len(list((tmp_path / "s").rglob("*.dcm"))) == 1  # kept
    assert r.hand_on() == 0 and calls == [1]  # it waits to be stable again
    time.sleep(0.6)
    assert r.hand_on() == 0 and calls == [1, 1]
    time.sleep(0.6)
    assert r.hand_on() == 1 and calls == [1, 1, 1]
    assert not list((tmp_path / "s").rglob("*.dcm"))

    def down(study: ReceivedStudy) -> None:
        raise RuntimeError("the database is down")

    r = send_one(ReceiverConfig(allow=("SCANNER1",), port=0, stable_s=0, attempts=2),
                 tmp_path / "t", down)
    assert r.hand_on() == 0 and r.hand_on() == 1  # the second failure gives up
    assert not list((tmp_path / "t").rglob("*.dcm"))


@pytest.mark.parametrize("kw, says", [
    ({"allow": ()}, "no sender is allowed"),
    ({"allow": ("A" * 17,)}, "invalid AE title"),
    ({"allow": ("PACS",), "ae_title": " "}, "invalid AE title"),
    ({"allow": ("PACS",), "stable_s": -1}, "negative"),
])
def test_config_refuses_what_cannot_work(kw: dict[str, Any], says: str) -> None:
    with pytest.raises(ReceiverError, match=says):
        ReceiverConfig(**kw)


def test_parse_titles() -> None:
    assert parse_titles(["A, B", "C"]) == ("A", "B", "C")
    assert parse_titles("SCANNER1") == ("SCANNER1",)


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    first = Receiver(ReceiverConfig(allow=("A",), port=0), tmp_path / "a", lambda s: None)
    _, port = first.start()
    try:
        with pytest.raises(ReceiverError, match="cannot listen"):
            Receiver(ReceiverConfig(allow=("A",), port=port), tmp_path / "b",
                     lambda s: None).start()
    finally:
        first.stop()
