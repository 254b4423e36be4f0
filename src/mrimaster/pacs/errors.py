"""The error every PACS operation raises (:class:`PacsError`).

Its message says what went wrong and its hint what to do, so that callers never show a
``requests`` traceback; ``status`` keeps the HTTP status when the PACS answered one.
"""

from __future__ import annotations

from mrimaster.errors import MRIMasterError


class PacsError(MRIMasterError):
    """The PACS could not be reached, refused a request, or answered something unusable.

    Attributes:
        status: The HTTP status when the PACS answered one, else ``None``.
    """

    def __init__(self, message: str, hint: str | None = None, status: int | None = None
                 ) -> None:
        super().__init__(message, hint)
        self.status = status
