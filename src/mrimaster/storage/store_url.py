"""Which object store ``MRIMASTER_STORE_URL`` names: :func:`open_store` opens a local
:class:`~mrimaster.storage.filestore.FileStore` for ``""``, a path or a ``file://`` URL, and an
:class:`~mrimaster.storage.s3store.S3Store` for ``s3://bucket/prefix``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from mrimaster.errors import MRIMasterError
from mrimaster.storage.filestore import FileStore
from mrimaster.storage.objectstore import ObjectStore
from mrimaster.storage.s3store import S3Store


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
