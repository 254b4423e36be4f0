"""A content-addressed object store: each file is kept once, under the SHA-256 of its bytes.

Two back-ends behind one interface (:class:`ObjectStore`), chosen by ``MRIMASTER_STORE_URL``
(:func:`open_store`):

- :class:`FileStore` (default): a local folder, ``objects/ab/abcdef...`` (the hash). A file is
  written to ``tmp/`` and renamed into ``objects/`` only when complete and flushed to disk, so a
  crash never leaves a half-written object.
- :class:`S3Store` (``s3://bucket/prefix``): objects at ``prefix/objects/ab/abcdef...`` in an
  S3-compatible bucket, each put with server-side encryption (AES256); a put is atomic in S3.

Both keep their work files (uploads being received, a segmentation's folder) in a local
``tmp/``. An object is stored before any database row refers to it. What is left in ``tmp/``
and objects no row refers to are removed only by :meth:`ObjectStore.cleanup` (``mrimaster
cleanup``), and only once older than a grace period: never at a process start, when other
processes may be writing.

Only the server's account may read the store: folders are created 0700 and files 0600 (set
when they are created, not afterwards), and what an older version left more open is
tightened when the store is opened.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from mrimaster.errors import MRIMasterError
from mrimaster.models.paths import file_sha256

log = logging.getLogger(__name__)
HASH = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed and make it 0700; returns it."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path) -> BinaryIO:
    """``path`` opened for writing (truncated), created 0600 (never readable by others, not
    even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode in os.open
    return os.fdopen(fd, "wb")


class UploadTooLarge(MRIMasterError):
    """An upload exceeded the size limit."""


class ObjectStore:
    """What the app needs of a store: put, read, test and delete objects by SHA-256, list them
    with their age, and local work files in ``tmp/``.

    A subclass stores the objects (:meth:`exists`, :meth:`_put_path`, :meth:`_put_data`,
    :meth:`read`, :meth:`delete`, :meth:`objects_with_times`); this class owns the local work
    folder (``root/tmp``, created 0700) and the clean-up.

    Args:
        root: Local folder of the work files (``tmp/`` under it).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        for folder in (self.root, self.tmp):
            private_dir(folder)

    # -- the objects (a back-end overrides these) ------------------------------------------
    def exists(self, digest: str) -> bool:
        raise NotImplementedError

    def read(self, digest: str) -> bytes:
        raise NotImplementedError

    def delete(self, digest: str) -> None:
        raise NotImplementedError

    def objects_with_times(self) -> Iterator[tuple[str, float]]:
        """Every object as ``(digest, when last written in seconds since the epoch)``."""
        raise NotImplementedError

    def modified(self, digest: str) -> float | None:
        """When ``digest`` was last written (``None``: it is missing)."""
        raise NotImplementedError

    def _put_path(self, src: Path, digest: str) -> None:
        raise NotImplementedError

    def _put_data(self, data: bytes, digest: str) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def put_file(self, src: Path) -> str:
        """Store a copy of ``src`` (kept in place); returns its SHA-256. An object that is
        already there is written again (local: its time refreshed), so that a clean-up never
        takes an object an upload is about to refer to."""
        digest = file_sha256(src)
        self._put_path(src, digest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self._put_data(data, digest)
        return digest

    def all_objects(self) -> list[str]:
        return sorted(d for d, _ in self.objects_with_times())

    @staticmethod
    def check(digest: str) -> str:
        if not HASH.match(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return digest

    @contextmanager
    def work_dir(self) -> Iterator[Path]:
        """A temporary local folder in ``tmp/``, removed on exit."""
        path = self.tmp / f"work-{secrets.token_hex(8)}"
        path.mkdir(mode=DIR_MODE)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextmanager
    def temporary(self, suffix: str = "") -> Iterator[Path]:
        """A temporary local file path in ``tmp/``, removed on exit."""
        path = self.tmp / f"{secrets.token_hex(8)}{suffix}"
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def receive(self, stream: BinaryIO, dest: Path, limit: int) -> int:
        """Copy ``stream`` to ``dest`` (a temporary path), refusing more than ``limit`` bytes.

        Raises:
            UploadTooLarge: the stream is longer than ``limit`` (``dest`` is removed).
        """
        size = 0
        try:
            with open_private(dest) as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise UploadTooLarge(
                            f"the upload is larger than the limit of {limit / 1e6:.0f} MB",
                            "upload a smaller file, or raise MRIMASTER_MAX_UPLOAD_MB")
                    out.write(chunk)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return size

    def cleanup(self, referenced: Iterable[str], grace_s: float,
                now: float | None = None) -> tuple[int, int]:
        """Remove work files and unreferenced objects older than ``grace_s`` seconds; returns
        ``(work files removed, objects removed)``.

        Safe beside running processes: an object younger than the grace period is kept
        whatever refers to it (an upload stores its objects before its row), and each object's
        age is read again right before it is deleted (a put refreshes it). The grace period
        must be longer than any upload or job takes (``mrimaster cleanup``: a day).

        Args:
            referenced: Every digest a database row refers to.
            grace_s: Minimum age of what is removed, in seconds.
            now: The current time (seconds since the epoch; tests move it).
        """
        now = time.time() if now is None else now
        cutoff = now - grace_s
        keep = set(referenced)
        work = 0
        for p in list(self.tmp.iterdir()):
            try:
                if p.lstat().st_mtime > cutoff or (p.is_dir() and any(
                        f.stat().st_mtime > cutoff for f in p.rglob("*"))):
                    continue
            except FileNotFoundError:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            work += 1
        objects = 0
        for digest, written in list(self.objects_with_times()):
            if digest in keep or written > cutoff:
                continue
            again = self.modified(digest)  # a put since the listing refreshed it
            if again is None or again > cutoff:
                continue
            self.delete(digest)
            objects += 1
        return work, objects


class FileStore(ObjectStore):
    """Objects by SHA-256 in a local folder: ``root/objects/ab/<digest>``.

    Args:
        root: Store folder (created 0700; existing folders and objects are tightened to
            0700 and 0600).
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.objects = private_dir(self.root / "objects")
        self.tighten()

    def tighten(self) -> int:
        """Make every folder of the store 0700 and every object 0600; returns how many
        modes were changed."""
        changed = 0
        for folder, dirs, names in os.walk(self.root):
            for name, mode in [*((d, DIR_MODE) for d in dirs), *((n, FILE_MODE) for n in names)]:
                p = os.path.join(folder, name)
                st = os.lstat(p)
                if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
                    os.chmod(p, mode)
                    changed += 1
        return changed

    def path(self, digest: str) -> Path:
        """Where the object ``digest`` lives (it may not exist)."""
        self.check(digest)
        return self.objects / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def modified(self, digest: str) -> float | None:
        try:
            return self.path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def objects_with_times(self) -> Iterator[tuple[str, float]]:
        for p in self.objects.glob("*/*"):
            if HASH.match(p.name):
                try:
                    yield p.name, p.stat().st_mtime
                except FileNotFoundError:
                    continue

    def _refresh(self, digest: str) -> bool:
        """Mark an existing object as just written; ``False``: it is missing."""
        try:
            os.utime(self.path(digest))
            return True
        except FileNotFoundError:
            return False

    def _put_path(self, src: Path, digest: str) -> None:
        if self._refresh(digest):
            return
        with self.temporary() as tmp, open(src, "rb") as f, open_private(tmp) as out:
            while chunk := f.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
            self._commit(tmp, digest)

    def _put_data(self, data: bytes, digest: str) -> None:
        if self._refresh(digest):
            return
        with self.temporary() as tmp:
            with open_private(tmp) as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._commit(tmp, digest)

    def _commit(self, tmp: Path, digest: str) -> None:
        dest = self.path(digest)
        dest.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        os.replace(tmp, dest)  # atomic on one file system


LocalStore = FileStore
"""The local-folder back-end (``FileStore`` is its historical name)."""


class S3Store(ObjectStore):
    """Objects by SHA-256 in an S3-compatible bucket: ``<prefix>/objects/ab/<digest>``, each
    put with server-side encryption (``AES256``). Work files stay local (``root/tmp``).

    Credentials come from boto3's usual chain (environment, profile, instance role).

    Args:
        root: Local folder of the work files.
        bucket: Bucket name.
        prefix: Key prefix ('' for the bucket's top).
        endpoint_url: Another S3-compatible endpoint (MinIO, moto), else AWS.
        client: A ready boto3 S3 client (tests), instead of one made here.
    """

    SSE = "AES256"

    def __init__(self, root: Path, bucket: str, prefix: str = "",
                 endpoint_url: str | None = None, client: Any = None) -> None:
        super().__init__(root)
        try:
            import boto3
        except ImportError as exc:
            raise MRIMasterError("an s3:// store needs boto3, which is not installed",
                                 "pip install 'mrimaster[aws]'") from exc

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None)

    def key(self, digest: str) -> str:
        self.check(digest)
        return "/".join(p for p in (self.prefix, "objects", digest[:2], digest) if p)

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.key(digest)))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def exists(self, digest: str) -> bool:
        return self._head(digest) is not None

    def modified(self, digest: str) -> float | None:
        head = self._head(digest)
        return None if head is None else float(head["LastModified"].timestamp())

    def read(self, digest: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
        data = bytes(body.read())
        if hashlib.sha256(data).hexdigest() != digest:
            raise MRIMasterError(f"the stored object {digest[:12]}... is corrupt",
                                 "tell the administrator: the bucket was changed by hand")
        return data

    def delete(self, digest: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def objects_with_times(self) -> Iterator[tuple[str, float]]:
        start = "/".join(p for p in (self.prefix, "objects") if p) + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start)
        for page in pages:
            for item in page.get("Contents", []):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                if HASH.match(name):
                    yield name, float(item["LastModified"].timestamp())

    # written again when present: an S3 put is atomic and content-addressed keys make it
    # idempotent; it refreshes LastModified, which the clean-up's grace period reads
    def _put_path(self, src: Path, digest: str) -> None:
        self.client.upload_file(str(src), self.bucket, self.key(digest),
                                ExtraArgs={"ServerSideEncryption": self.SSE})

    def _put_data(self, data: bytes, digest: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data,
                               ServerSideEncryption=self.SSE)


def open_store(url: str, work_root: Path, endpoint_url: str | None = None) -> ObjectStore:
    """The store ``url`` names: ``""`` or a local path (``file:///srv/store``) for a folder
    (default ``work_root``), ``s3://bucket/prefix`` for S3.

    Raises:
        MRIMasterError: an unknown scheme, or an S3 URL without a bucket.
    """
    if not url:
        return FileStore(work_root)
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise MRIMasterError(f"MRIMASTER_STORE_URL {url!r} names no bucket",
                                 "write s3://bucket/prefix")
        return S3Store(work_root, parsed.netloc, parsed.path, endpoint_url)
    if parsed.scheme in ("", "file"):
        return FileStore(Path(parsed.path or url).expanduser())
    raise MRIMasterError(f"MRIMASTER_STORE_URL {url!r}: unknown scheme {parsed.scheme!r}",
                         "use s3://bucket/prefix, or a local folder")
