"""The job runner: claims queued jobs (3D segmentations) and runs them one at a time, so the
pages and the API never wait for a segmentation.

It runs as a thread of ``mrimaster serve`` (the single-process default) or as the whole of a
``mrimaster worker`` process; any number of them may share one database. A claim is a lease
(:func:`mrimaster.storage.repository.claim_job`): a heartbeat thread renews it every third of
its length while the job runs, also while the network computes; a runner that dies stops
renewing, and another takes the job over once the lease has expired, at most
``job_max_attempts`` starts in all. A job that runs past ``job_timeout_s`` (hung: a network
that never returns) is given up the same way: its heartbeat stops renewing, so another runner
takes it over once the lease expires, or it fails when out of attempts. A job writes its
state and result only while its claim still owns it
(:func:`mrimaster.storage.repository.update_owned_job`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Job

log = logging.getLogger(__name__)

JobFunction = Callable[[AppContext, Job], None]
"""Runs one claimed job (``job.owner`` is its claim's token); default
:func:`mrimaster.serving.seg_jobs.run_job`."""


def worker_name() -> str:
    """``host:pid``: who holds a claim (the token adds a random part per claim)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Renews a claim's lease every ``lease_s / 3`` seconds in a thread of its own, until
    stopped, until the lease is lost (expired and taken over, or the job ended), or until the
    job has run for ``timeout_s`` (then it stops renewing and sets :attr:`lost`).

    Args:
        ctx: The app context (its database).
        job: The claimed job (``job.owner`` is the claim's token).
        lease_s: The lease's length in seconds.
        timeout_s: The longest the job may hold its claim (``None``: no limit).
    """

    def __init__(self, ctx: AppContext, job: Job, lease_s: float,
                 timeout_s: float | None = None) -> None:
        self.ctx, self.job, self.lease_s, self.timeout_s = ctx, job, lease_s, timeout_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"mrimaster-lease-{job.id}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        owner = self.job.owner or ""
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        while not self._stop.wait(self.lease_s / 3):
            if deadline is not None and time.monotonic() > deadline:
                log.error("job %d ran for more than %.0f s: its lease is given up (another "
                          "worker may take it over; a late result of this one is refused)",
                          self.job.id, self.timeout_s)
                self.lost.set()
                return
            try:
                with self.ctx.sessions() as db:
                    if repo.renew_lease(db, self.job.id, owner, self.lease_s):
                        continue
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("job %d: renewing the lease failed", self.job.id)
                continue
            if self._stop.is_set():  # the job ended while this beat ran: nothing was lost
                return
            log.warning("job %d: lease lost (it expired and another worker may have taken the "
                        "job over); this worker's result will be refused", self.job.id)
            self.lost.set()
            return


class JobRunner:
    """Claims and runs jobs; :meth:`wake` makes it look at once (after an upload).

    Args:
        ctx: The app context.
        poll_s: Seconds between looks at the queue when idle.
        lease_s: Lease length (default ``ctx.config.job_lease_s``).
        max_attempts: Starts of a job before it fails (default the config's).
        timeout_s: The longest a job runs before its lease is given up (default the
            config's ``job_timeout_s``).
        run: Runs one job (default :func:`mrimaster.serving.seg_jobs.run_job`; tests stub it).
        name: Who claims (default ``host:pid``).
    """

    def __init__(self, ctx: AppContext, poll_s: float = 2.0, lease_s: float | None = None,
                 max_attempts: int | None = None, run: JobFunction | None = None,
                 name: str | None = None, timeout_s: float | None = None) -> None:
        self.ctx = ctx
        self.timeout_s = timeout_s or ctx.config.job_timeout_s
        self.poll_s = poll_s
        self.lease_s = lease_s or ctx.config.job_lease_s
        self.max_attempts = max_attempts or ctx.config.job_max_attempts
        self.run = run
        self.name = name or worker_name()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop, name="mrimaster-jobs", daemon=True)

    def start(self) -> JobRunner:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def claim(self) -> Job | None:
        """Fail the jobs out of attempts, then claim one (or ``None``)."""
        token = f"{self.name}:{secrets.token_hex(4)}"
        with self.ctx.sessions() as db:
            failed = repo.expire_jobs(db, self.max_attempts)
            if failed:
                log.warning("%d job(s) failed: their workers stopped %d times", failed,
                            self.max_attempts)
            return repo.claim_job(db, token, self.lease_s, self.max_attempts)

    def run_one(self, job: Job) -> None:
        """Run a claimed job while a :class:`Heartbeat` holds its lease."""
        run = self.run
        if run is None:
            from mrimaster.serving.seg_jobs import run_job

            run = run_job
        log.info("job %d: case %d, attempt %d, claim %s", job.id, job.case_id, job.attempts,
                 job.owner)
        with Heartbeat(self.ctx, job, self.lease_s, self.timeout_s):
            run(self.ctx, job)

    def run_pending(self) -> int:
        """Run every claimable job now, in this thread; returns how many ran."""
        count = 0
        while not self._stop.is_set():
            job = self.claim()
            if job is None:
                return count
            self.run_one(job)
            count += 1
        return count

    def loop(self) -> None:
        """Run jobs until :meth:`stop` (the thread's, or a worker process's main loop)."""
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:  # a database hiccup must not kill the worker
                log.exception("job runner")
            self._wake.wait(self.poll_s)
            self._wake.clear()
