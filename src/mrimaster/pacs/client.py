"""A small DICOMweb client (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store.

It wraps ``dicomweb-client`` and turns every network or HTTP failure into one
:class:`~mrimaster.pacs.errors.PacsError` that says what went wrong and what to do (never a
``requests`` traceback). Searches and retrievals (idempotent GETs) are retried with exponential
backoff on connection errors, timeouts and 408/429/5xx answers; a store is not retried here (a
retry of the same instances is safe, since their SOP Instance UIDs do not change: ``mrimaster
pacs send``).

Settings: :class:`~mrimaster.pacs.config.PacsConfig` (:func:`~mrimaster.pacs.config.pacs_config`
reads them); answers: :mod:`mrimaster.pacs.records`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mrimaster.pacs.config import PacsConfig
from mrimaster.pacs.errors import PacsError
from mrimaster.pacs.records import StoreResult, StudySummary

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIABLE_STATUS = {408, 429, 500, 502, 503, 504}
"""HTTP answers after which an idempotent request is tried again."""


def dicom_date_range(text: str) -> str:
    """A date or range as QIDO wants it (``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, open ends).

    Accepts those forms and ISO dates (``2024-01-31``, ``2024-01-01..2024-01-31``).

    Raises:
        PacsError: anything else.
    """
    s = text.strip()
    iso = r"\d{4}-\d{2}-\d{2}"
    if re.fullmatch(rf"({iso})?\.\.({iso})?", s) or re.fullmatch(iso, s):
        s = "-".join(p.replace("-", "") for p in s.split("..")) if ".." in s \
            else s.replace("-", "")
    if not re.fullmatch(r"\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8}", s) or s == "-":
        raise PacsError(f"bad date or date range {text!r}",
                        "use 20240131, 20240101-20240131, 20240101- or "
                        "2024-01-01..2024-01-31")
    return s


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _count(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class Pacs:
    """One DICOMweb server.

    Args:
        config: Where it is and how to log in (:func:`pacs_config`).
        session: A ``requests.Session`` to use (tests); default one built from ``config``.
    """

    def __init__(self, config: PacsConfig, session: Any = None) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.config = config
        if session is None:
            import requests

            session = requests.Session()
            if config.auth == "basic":
                session.auth = (config.user or "", config.password or "")
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else None
        self._client = DICOMwebClient(config.url, session=session, headers=headers,
                                      timeout=config.timeout_s)
        self._client.set_http_retry_params(retry=False)  # retried here, uniformly

    # -- errors and retries -------------------------------------------------------------------

    def _error(self, exc: Exception, action: str) -> PacsError:
        import requests

        url = self.config.url
        if isinstance(exc, requests.exceptions.Timeout):
            return PacsError(f"the PACS at {url} did not answer within {self.config.timeout_s:g} s "
                             f"({action})", "check that the PACS is up and not overloaded, then "
                             "retry; MRIMASTER_DICOMWEB_TIMEOUT sets the wait")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return PacsError(f"cannot reach the PACS at {url} ({action})",
                             "check MRIMASTER_DICOMWEB_URL (or --dicomweb), that the PACS is "
                             "running and that this machine may connect to it, then retry")
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            reason = exc.response.reason or ""
            if status == 401:
                return PacsError(f"the PACS at {url} refused the credentials (401 Unauthorized, "
                                 f"{action}; authentication: {self.config.auth})",
                                 "set MRIMASTER_DICOMWEB_USER and MRIMASTER_DICOMWEB_PASSWORD, "
                                 "or MRIMASTER_DICOMWEB_TOKEN, to an account of this PACS",
                                 status)
            if status == 403:
                return PacsError(f"the PACS at {url} does not allow this account to "
                                 f"{action} (403 Forbidden)",
                                 "ask the PACS administrator for the permission", status)
            if status == 404:
                return PacsError(f"not found on the PACS at {url} ({action}: 404)",
                                 "check the study UID (`mrimaster pacs studies` lists them) and "
                                 "that the URL is the DICOMweb root (e.g. .../dicom-web)", status)
            return PacsError(f"the PACS at {url} answered {status} {reason} ({action})",
                             "retry later; if it persists, the PACS log says why", status)
        if isinstance(exc, requests.exceptions.RequestException):
            return PacsError(f"request to the PACS at {url} failed ({action}): {exc}",
                             "check MRIMASTER_DICOMWEB_URL")
        return PacsError(f"the PACS at {url} sent an answer that cannot be read ({action}: "
                         f"{type(exc).__name__}: {exc})",
                         "check that the URL is a DICOMweb root (e.g. .../dicom-web)")

    def _retriable(self, exc: Exception) -> bool:
        import requests

        if isinstance(exc, requests.exceptions.HTTPError):
            return exc.response is not None and exc.response.status_code in RETRIABLE_STATUS
        return isinstance(exc, (requests.exceptions.ConnectionError,
                                requests.exceptions.Timeout))

    def _get(self, action: str, call: Callable[[], T]) -> T:
        """``call()`` (an idempotent GET), retried with backoff; failures as PacsError."""
        wait = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            try:
                return call()
            except PacsError:
                raise
            except Exception as exc:
                if attempt < self.config.retries and self._retriable(exc):
                    log.info("PACS: %s failed (%s), retry %d of %d in %.1f s", action,
                             type(exc).__name__, attempt + 1, self.config.retries, wait)
                    time.sleep(wait)
                    wait *= 2
                    continue
                raise self._error(exc, action) from None
        raise AssertionError("unreachable")

    # -- QIDO-RS ------------------------------------------------------------------------------

    def search_studies(self, patient_id: str | None = None, date_range: str | None = None,
                       accession: str | None = None, study_uid: str | None = None,
                       limit: int | None = None) -> list[StudySummary]:
        """Studies matching every filter given (QIDO-RS ``/studies``).

        Args:
            patient_id: Exact Patient ID (``*``/``?`` wildcards as the PACS allows).
            date_range: Study date or range (see :func:`dicom_date_range`).
            accession: Accession number.
            study_uid: One study.
            limit: At most this many.

        Raises:
            PacsError: unreachable, timed out, refused, or a bad date range.
        """
        from pydicom import Dataset

        filters: dict[str, Any] = {}
        if patient_id:
            filters["PatientID"] = patient_id
        if date_range:
            filters["StudyDate"] = dicom_date_range(date_range)
        if accession:
            filters["AccessionNumber"] = accession
        if study_uid:
            filters["StudyInstanceUID"] = study_uid
        fields = ["PatientName", "PatientID", "StudyDate", "AccessionNumber",
                  "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"]
        found = self._get("searching studies", lambda: self._client.search_for_studies(
            search_filters=filters, fields=fields, limit=limit, get_remaining=limit is None))
        out = []
        for item in found:
            ds = Dataset.from_json(item)
            modalities = ds.get("ModalitiesInStudy", [])
            modalities = [modalities] if isinstance(modalities, str) else list(modalities)
            out.append(StudySummary(
                _text(ds, "StudyInstanceUID"), _text(ds, "PatientID"),
                _text(ds, "PatientName"), _text(ds, "StudyDate"),
                _text(ds, "AccessionNumber"), _text(ds, "StudyDescription"),
                tuple(str(m) for m in modalities), _count(ds, "NumberOfStudyRelatedSeries"),
                _count(ds, "NumberOfStudyRelatedInstances")))
        return out

    def find_study(self, study_uid: str) -> StudySummary:
        """The one study ``study_uid``.

        Raises:
            PacsError: not on the PACS (status 404), or as :meth:`search_studies`.
        """
        found = [s for s in self.search_studies(study_uid=study_uid) if s.study_uid == study_uid]
        if not found:
            raise PacsError(f"no study {study_uid} on the PACS at {self.config.url}",
                            "check the UID: `mrimaster pacs studies --patient ID` lists a "
                            "patient's studies", 404)
        return found[0]

    # -- WADO-RS ------------------------------------------------------------------------------

    def retrieve_study(self, study_uid: str, folder: Path) -> list[Path]:
        """Every instance of ``study_uid`` as Part-10 files ``folder/<SOPInstanceUID>.dcm``.

        The number of instances received is checked against the study's
        NumberOfStudyRelatedInstances (QIDO-RS), so an incomplete transfer is an error, not a
        smaller study. (A PACS that lost instances and counts what it has is not detected
        here; the importer then finds the missing slices.)

        Raises:
            PacsError: no such study, fewer instances than listed, or as :meth:`_get`.
        """
        summary = self.find_study(study_uid)
        folder.mkdir(parents=True, exist_ok=True)
        action = f"retrieving study {study_uid}"

        def fetch() -> list[Path]:
            paths = []
            for ds in self._client.iter_study(study_uid, media_types=(("application/dicom",
                                                                          "*"),)):
                path = folder / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
            return paths

        paths = self._get(action, fetch)
        expected = summary.n_instances
        if expected is not None and len(set(paths)) < expected:
            raise PacsError(f"study {study_uid} is incomplete: the PACS lists {expected} "
                            f"instances but sent {len(set(paths))}",
                            "retry; if it persists, the study is still arriving at the PACS or "
                            "some of its instances are damaged there (ask its administrator)")
        log.info("PACS: retrieved %d instances of study %s", len(paths), study_uid)
        return sorted(set(paths))

    # -- STOW-RS ------------------------------------------------------------------------------

    def store(self, instances: Sequence[Any]) -> StoreResult:
        """Store ``instances`` (pydicom datasets or Part-10 file paths) in one STOW-RS request.

        Returns:
            Per SOP Instance UID, stored or failed with the PACS' reason. Instances the PACS
            neither confirms nor refuses are counted failed ("no answer").

        Raises:
            PacsError: the request itself failed (unreachable, timeout, 401/403, refused as a
                whole): then the message says nothing was confirmed stored.
        """
        import pydicom
        import requests

        datasets = [pydicom.dcmread(p) if isinstance(p, (str, Path)) else p for p in instances]
        if not datasets:
            return StoreResult()
        sent = [str(ds.SOPInstanceUID) for ds in datasets]
        try:
            answer = self._client.store_instances(datasets)
        except requests.exceptions.HTTPError as exc:  # 409: some or all refused, body says
            body = _json_body(exc.response)
            if exc.response is not None and exc.response.status_code == 409 and body:
                return _store_result(pydicom.Dataset.from_json(body), sent)
            raise self._stow_error(exc) from None
        except Exception as exc:
            raise self._stow_error(exc) from None
        return _store_result(answer, sent)

    def _stow_error(self, exc: Exception) -> PacsError:
        err = self._error(exc, "storing instances")
        return PacsError(f"{err.message}; no instance was confirmed stored",
                         f"{err.hint}. Sending the same files again is safe (same SOP Instance "
                         "UIDs): `mrimaster pacs send DIR`", err.status)


def _json_body(response: Any) -> Any:
    try:
        return response.json() if response is not None and response.content else None
    except ValueError:
        return None


def _store_result(answer: Any, sent: Sequence[str]) -> StoreResult:
    result = StoreResult()
    for item in answer.get("ReferencedSOPSequence", []):
        result.stored.append(str(item.ReferencedSOPInstanceUID))
    for item in answer.get("FailedSOPSequence", []):
        code = item.get("FailureReason")
        result.failed[str(item.ReferencedSOPInstanceUID)] = f"failure reason {code}" \
            if code is not None else "refused"
    for uid in sent:
        if uid not in result.stored and uid not in result.failed:
            if "ReferencedSOPSequence" in answer or "FailedSOPSequence" in answer:
                result.failed[uid] = "no answer for this instance"
            else:  # a PACS that answers 200 with no body: take it as stored
                result.stored.append(uid)
    return result
