"""A DICOM receiver (DIMSE C-STORE and C-ECHO SCP, pynetdicom) so that a scanner or a PACS can
route studies to MRIMaster.

Only the AE titles of :attr:`ReceiverConfig.allow` may associate (anything else is rejected at
association, before a byte of a dataset arrives), and a caller must address this receiver by
its own AE title. C-ECHO is answered.

When is a study complete? DIMSE has no "end of study" message, so a study is taken as complete
once no instance of it has arrived for :attr:`ReceiverConfig.stable_s` seconds (Orthanc's
``StableAge``). Instances are spooled per association and join their study only when the
association is released normally; an aborted or dropped association's instances are deleted
(a sender retries a failed transfer as a whole), so a study is never imported half-sent.
Instances that arrive after their study was handed on start a new study folder.

Spool layout (names carry no identifier: a study's folder is named by a hash of its UID)::

    SPOOL/partial/<association>/<n>.dcm     while an association is open
    SPOOL/studies/<sha256(study UID)[:20]>-<n>/<association>-<k>.dcm, source.json

:meth:`Receiver.hand_on` gives each stable study folder to a callback and removes the folder
once the callback returned (a callback that raises gets the study again later). It runs on a
background thread every second while the receiver is started, and may be called directly
(tests). Nothing here knows about models or the web app.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrimaster.errors import MRIMasterError

log = logging.getLogger(__name__)

OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
SUCCESS = 0x0000


class ReceiverError(MRIMasterError):
    """The receiver cannot start as configured."""


@dataclass(frozen=True)
class ReceiverConfig:
    """Settings of the receiver.

    Attributes:
        allow: AE titles that may send (a scanner's or a PACS's own title); at least one.
        ae_title: This receiver's AE title (callers must address it by this name).
        host: Address to listen on.
        port: TCP port (11112 is the IANA-registered DICOM port that needs no root).
        stable_s: Seconds without a new instance after which a study is complete.
        max_spool_bytes: Instances are refused (Out of Resources) once the spool holds this much.
        attempts: Times a study is handed on before it is given up when the hand-on fails.
    """

    allow: tuple[str, ...]
    ae_title: str = "MRIMASTER"
    host: str = "127.0.0.1"
    port: int = 11112
    stable_s: float = 30.0
    max_spool_bytes: int = 20 * 1024**3
    attempts: int = 5

    def __post_init__(self) -> None:
        titles = [self.ae_title, *self.allow]
        bad = [t for t in titles if not t.strip() or len(t.strip()) > 16 or "\\" in t]
        if bad:
            raise ReceiverError(f"invalid AE title(s) {bad}",
                                "an AE title has 1 to 16 characters and no backslash")
        if not self.allow:
            raise ReceiverError(
                "no sender is allowed: an open receiver would take studies from anyone on "
                "the network", "name the scanners' and PACS's AE titles (--allow SCANNER1,PACS)")
        if self.stable_s < 0:
            raise ReceiverError(f"stable time {self.stable_s} s is negative",
                                "give 0 or more seconds")


@dataclass
class ReceivedStudy:
    """One stable study handed on.

    Attributes:
        folder: Its spooled Part-10 files (removed after the callback returns).
        files: The ``.dcm`` files, sorted.
        calling_aets: AE titles that sent its instances.
        n_bytes: Total size of the files.
    """

    folder: Path
    files: list[Path]
    calling_aets: list[str]
    n_bytes: int


@dataclass
class _Open:
    folder: Path
    studies: dict[str, list[Path]] = field(default_factory=dict)
    released: bool = False


def study_key(study_uid: str) -> str:
    """A folder name for a study that does not reveal its UID."""
    return hashlib.sha256(study_uid.encode()).hexdigest()[:20]


class Receiver:
    """The C-STORE / C-ECHO SCP over a spool folder.

    Args:
        config: Its settings.
        spool: A private folder for the identified files in transit (created).
        on_study: Called with each stable :class:`ReceivedStudy` (from a background thread once
            :meth:`start` ran); its exceptions are logged, never raised to the sender.
    """

    def __init__(self, config: ReceiverConfig, spool: Path,
                 on_study: Callable[[ReceivedStudy], Any]) -> None:
        self.config = config
        self.spool = spool
        self.on_study = on_study
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._count = 0
        self._server: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for sub in ("partial", "studies"):
            (spool / sub).mkdir(parents=True, exist_ok=True)
        shutil.rmtree(spool / "partial")  # an association cut by a crash never completed
        (spool / "partial").mkdir()
        self._bytes = _size(spool)

    # -- the DICOM side ---------------------------------------------------------------------

    def _ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.config.ae_title)
        ae.require_calling_aet = [t.strip() for t in self.config.allow]
        ae.require_called_aet = True
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def start(self, hand_on: bool = True) -> tuple[str, int]:
        """Listen (non-blocking) and, with ``hand_on``, hand on stable studies every second
        from a background thread; returns the address (the port is the one bound when
        ``config.port`` is 0).

        Raises:
            ReceiverError: the port cannot be bound.
        """
        from pynetdicom import evt

        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_RELEASED, self._released),
                    (evt.EVT_CONN_CLOSE, self._closed)]
        try:
            self._server = self._ae().start_server((self.config.host, self.config.port),
                                                   block=False, evt_handlers=handlers)
        except OSError as exc:
            raise ReceiverError(f"cannot listen on {self.config.host}:{self.config.port}: "
                                f"{exc.strerror or exc}",
                                "choose a free port (--port), or stop what uses it") from exc
        self._stop.clear()
        if hand_on:
            self._thread = threading.Thread(target=self._loop, name="dicom-hand-on",
                                            daemon=True)
            self._thread.start()
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop listening and handing on (studies still spooled are handed on at the next
        start)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _store(self, event: Any) -> int:
        """EVT_C_STORE: write the instance (Part 10) into its association's folder."""
        try:
            uid = str(event.dataset.StudyInstanceUID)
        except Exception:  # noqa: BLE001 (a dataset we cannot parse is refused, not raised)
            log.warning("refused an instance without a readable StudyInstanceUID from %s",
                        event.assoc.requestor.ae_title)
            return CANNOT_UNDERSTAND
        data = event.encoded_dataset()
        with self._lock:
            if self._bytes + len(data) > self.config.max_spool_bytes:
                log.error("spool full (%d bytes): instance refused", self.config.max_spool_bytes)
                return OUT_OF_RESOURCES
            current = self._open.get(id(event.assoc))
            if current is None:
                self._count += 1
                current = self._open[id(event.assoc)] = _Open(
                    self.spool / "partial" / f"{self._count:06d}")
                current.folder.mkdir()
            path = current.folder / f"{sum(map(len, current.studies.values())):06d}.dcm"
            current.studies.setdefault(uid, []).append(path)
            self._bytes += len(data)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # identified data
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError:
            log.exception("could not spool an instance")
            with self._lock:
                current.studies[uid].remove(path)
                self._bytes -= len(data)
            path.unlink(missing_ok=True)
            return OUT_OF_RESOURCES
        return SUCCESS

    def _released(self, event: Any) -> None:
        """EVT_RELEASED: the association ended normally, its instances join their studies."""
        with self._lock:
            current = self._open.pop(id(event.assoc), None)
            if current is None:
                return
            current.released = True
            sender = str(event.assoc.requestor.ae_title).strip()
            for uid, paths in current.studies.items():
                target = self._study_folder(uid)
                for path in paths:
                    path.rename(target / f"{current.folder.name}-{path.name}")
                source = target / "source.json"
                meta = json.loads(source.read_text()) if source.exists() else {"aets": []}
                meta["aets"] = sorted({*meta["aets"], sender})
                source.write_text(json.dumps(meta))
            shutil.rmtree(current.folder, ignore_errors=True)

    def _study_folder(self, uid: str) -> Path:
        """The spool folder a study's instances gather in (one not yet handed on)."""
        key = study_key(uid)
        found = sorted((self.spool / "studies").glob(f"{key}-*"))
        if found and not (found[-1] / ".handing-on").exists():
            return found[-1]
        folder = self.spool / "studies" / f"{key}-{len(found):03d}"
        folder.mkdir()
        return folder

    def _closed(self, event: Any) -> None:
        """EVT_CONN_CLOSE: an association that was not released (aborted, dropped, timed out)
        leaves nothing behind."""
        with self._lock:
            current = self._open.pop(id(event.assoc), None)
        if current is not None and not current.released:
            n = sum(map(len, current.studies.values()))
            log.warning("association from %s ended without release: %d instance(s) dropped",
                        str(event.assoc.requestor.ae_title).strip(), n)
            self._remove(current.folder)

    # -- handing on -------------------------------------------------------------------------

    def stable(self, now: float | None = None) -> list[Path]:
        """Study folders with no new instance for ``stable_s`` seconds."""
        now = time.time() if now is None else now
        out = []
        with self._lock:
            for folder in sorted((self.spool / "studies").iterdir()):
                stamps = [p.stat().st_mtime for p in folder.iterdir()]
                if stamps and now - max(stamps) >= self.config.stable_s:
                    out.append(folder)
        return out

    def hand_on(self, now: float | None = None) -> int:
        """Give every stable study to ``on_study``, then delete its files; returns how many
        were handed on. A callback that raises (a database that is down) leaves the study in
        the spool, to be handed on again once stable again, at most
        :attr:`ReceiverConfig.attempts` times; the callback decides what a refusal is (it
        returns normally)."""
        done = 0
        for folder in self.stable(now):
            marker = folder / ".handing-on"
            with self._lock:
                marker.touch()
            files = sorted(folder.glob("*.dcm"))
            source = folder / "source.json"
            meta = json.loads(source.read_text()) if source.exists() else {"aets": []}
            try:
                self.on_study(ReceivedStudy(folder, files, meta["aets"],
                                            sum(p.stat().st_size for p in files)))
            except Exception:  # noqa: BLE001 (the loop goes on; the study is kept for a retry)
                meta["attempts"] = meta.get("attempts", 0) + 1
                if meta["attempts"] < self.config.attempts:
                    log.exception("handing on a received study failed (attempt %d of %d); "
                                  "it stays spooled", meta["attempts"], self.config.attempts)
                    with self._lock:
                        source.write_text(json.dumps(meta))  # its age starts again
                        marker.unlink()
                    continue
                log.exception("handing on a received study failed %d times: its %d "
                              "instance(s) are deleted; send the study again",
                              meta["attempts"], len(files))
            self._remove(folder)
            done += 1
        return done

    def _remove(self, folder: Path) -> None:
        size = _size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._bytes = max(0, self._bytes - size)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.hand_on()


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.dcm") if p.is_file())


def parse_titles(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"A, B"`` or ``["A", "B,C"]`` -> ``("A", "B", "C")``."""
    parts = [text] if isinstance(text, str) else list(text)
    return tuple(t.strip() for p in parts for t in p.split(",") if t.strip())
