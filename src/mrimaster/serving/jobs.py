"""The background worker: one thread that runs queued jobs (3D segmentations) one at a time,
so the pages and the API never wait for a segmentation."""

from __future__ import annotations

import logging
import threading

from mrimaster.serving.context import AppContext
from mrimaster.serving.studies import run_job
from mrimaster.storage import repository as repo

log = logging.getLogger(__name__)


class JobRunner:
    """Polls the jobs table; :meth:`wake` makes it look at once (after an upload)."""

    def __init__(self, ctx: AppContext, poll_s: float = 2.0, stale_s: float = 1800.0) -> None:
        self.ctx = ctx
        self.poll_s = poll_s
        self.stale_s = stale_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mrimaster-jobs", daemon=True)

    def start(self) -> JobRunner:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def run_pending(self) -> int:
        """Run every queued job now, in this thread; returns how many ran."""
        count = 0
        while True:
            with self.ctx.sessions() as db:
                job = repo.claim_job(db)
            if job is None:
                return count
            log.info("job %d: segmenting case %d (attempt %d)", job.id, job.case_id,
                     job.attempts)
            run_job(self.ctx, job)
            count += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self.ctx.sessions() as db:  # a job whose own error handling failed
                    repo.fail_stale_jobs(db, self.stale_s)
                self.run_pending()
            except Exception:  # a database hiccup must not kill the worker
                log.exception("job runner")
            self._wake.wait(self.poll_s)
            self._wake.clear()
