"""Jobs with leases, on SQLite and on a real PostgreSQL: claims never collide, a lease is
renewed while a job runs, a SIGKILLed worker's job is taken over after its lease expires and
its late write is refused."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mrimaster.serving.context import AppContext
from mrimaster.serving.jobs import JobRunner
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Case, Job
from tests.serving.conftest import make_ctx, serve_env

LEASE_S = 2.0


def add_jobs(ctx: AppContext, n: int) -> list[int]:
    with ctx.sessions() as db:
        user = repo.get_user(db, "doctor")
        assert user is not None
        ids = []
        for i in range(n):
            case = repo.add_case(db, "3d", f"P{i}", user, {}, None, "new", None, "")
            ids.append(repo.add_job(db, case).id)
        db.commit()
    return ids


def job_row(ctx: AppContext, job_id: int) -> Job:
    with ctx.sessions() as db:
        job = db.get(Job, job_id)
        assert job is not None
        return job


def test_two_claimers_never_get_the_same_job(tmp_path: Path, db_url: str) -> None:
    ctx = make_ctx(tmp_path, db_url, None)
    ids = add_jobs(ctx, 50)
    got: dict[str, list[int]] = {}
    start = threading.Barrier(8)

    def claimer(name: str) -> None:
        mine = got.setdefault(name, [])
        start.wait()
        while True:
            with ctx.sessions() as db:
                job = repo.claim_job(db, f"{name}:{len(mine)}", 30, 3)
            if job is None:
                return
            mine.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for mine in got.values() for i in mine]
    assert sorted(claimed) == ids  # every job once, none twice
    assert sum(1 for mine in got.values() if mine) > 1  # they did race
    with ctx.sessions() as db:
        assert {j.state for j in db.query(Job)} == {"running"}
        assert {j.attempts for j in db.query(Job)} == {1}
    ctx.engine.dispose()


def claim_while_running(ctx: AppContext, token: str, seconds: float, got: list[Job],
                        stop_on_claim: bool = False) -> None:
    """Another worker trying to claim (lease 1 s) every 0.1 s for ``seconds``; what it gets
    goes into ``got``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop_on_claim and got):
        with ctx.sessions() as db:
            other = repo.claim_job(db, token, 1.0, 3)
        if other is not None:
            got.append(other)
        time.sleep(0.1)


def test_a_running_job_keeps_its_lease(tmp_path: Path, db_url: str) -> None:
    """The heartbeat renews the lease while the job runs for longer than the lease: nobody
    else can claim it meanwhile, and its result is written."""
    ctx = make_ctx(tmp_path, db_url, None)
    (job_id,) = add_jobs(ctx, 1)
    stolen: list[Job] = []

    def slow(c: AppContext, job: Job) -> None:
        claim_while_running(c, "thief:1:x", 2.5, stolen)  # 2.5 leases
        with c.sessions() as db:
            assert repo.update_owned_job(db, job.id, job.owner or "", state="done")

    assert JobRunner(ctx, lease_s=1.0, run=slow).run_pending() == 1
    assert stolen == [] and job_row(ctx, job_id).state == "done"
    ctx.engine.dispose()


def test_a_hung_job_gives_its_lease_up(tmp_path: Path, db_url: str) -> None:
    """A job that runs past the time limit (a network that never returns) stops being
    renewed: another runner takes it over after the lease, and the hung one's late write is
    refused."""
    ctx = make_ctx(tmp_path, db_url, None)
    (job_id,) = add_jobs(ctx, 1)
    taken: list[Job] = []
    late: list[bool] = []

    def hung(c: AppContext, job: Job) -> None:
        claim_while_running(c, "rescuer:1:x", 8.0, taken, stop_on_claim=True)
        with c.sessions() as db:
            late.append(repo.update_owned_job(db, job.id, job.owner or "", state="done"))

    assert JobRunner(ctx, lease_s=1.0, timeout_s=2.0, run=hung).run_pending() == 1
    assert [j.id for j in taken] == [job_id] and late == [False]
    row = job_row(ctx, job_id)
    assert row.state == "running" and row.owner == "rescuer:1:x" and row.attempts == 2
    ctx.engine.dispose()


WORKER = """
import os, sys, time
from mrimaster.serving.config import load_serve_config
from mrimaster.serving.context import build_context
from mrimaster.serving.jobs import JobRunner
from mrimaster.storage import repository as repo

def stub(ctx, job):  # a segmentation that takes sys.argv[1] seconds
    time.sleep(float(sys.argv[1]))
    with ctx.sessions() as db:
        if repo.update_owned_job(db, job.id, job.owner, commit=False, state="done",
                                 progress=1.0, message=f"done by {os.getpid()}"):
            case = repo.get_case(db, job.case_id)
            case.result = {"by": os.getpid()}
        db.commit()

ctx = build_context(load_serve_config(), load_models=False)
runner = JobRunner(ctx, poll_s=0.2, run=stub)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and not runner.run_pending():
    time.sleep(0.2)
"""


def start_worker(env: dict[str, str], seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(seconds)], env=env,
                            cwd=Path(__file__).resolve().parents[2])


def wait_for(check: object, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def test_a_killed_workers_job_is_taken_over(tmp_path: Path, db_url: str,
                                            caplog: object) -> None:
    ctx = make_ctx(tmp_path, db_url, None)
    (job_id,) = add_jobs(ctx, 1)
    env = serve_env(tmp_path / "app", db_url, MRIMASTER_JOB_LEASE_S=str(LEASE_S))
    dead = start_worker(env, 600)
    try:
        wait_for(lambda: job_row(ctx, job_id).owner is not None, 60)
        first = job_row(ctx, job_id)
        assert first.state == "running" and first.owner.split(":")[1] == str(dead.pid)
        time.sleep(LEASE_S)  # it renews its lease while alive
        assert job_row(ctx, job_id).lease_until > first.lease_until
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
        killed = time.monotonic()
    finally:
        if dead.poll() is None:
            dead.kill()
    heir = start_worker(env, 0.5)
    try:
        wait_for(lambda: job_row(ctx, job_id).state == "done", LEASE_S + 60)
        taken_in = time.monotonic() - killed
    finally:
        heir.wait(30)
    done = job_row(ctx, job_id)
    assert done.attempts == 2 and done.message == f"done by {heir.pid}"
    assert taken_in < LEASE_S + 30
    with ctx.sessions() as db:
        case = db.get(Case, done.case_id)
        assert case is not None and case.result == {"by": heir.pid}
        # the dead worker's late write (had it woken up) is refused
        assert not repo.update_owned_job(db, job_id, first.owner or "", state="failed")
        assert not repo.renew_lease(db, job_id, first.owner or "", 30)
    # and run_job itself, with the stale claim, writes nothing (it fails: no models here)
    from mrimaster.serving.seg_jobs import run_job

    with caplog.at_level(logging.WARNING):  # type: ignore[attr-defined]
        run_job(ctx, first)
    assert "no longer this worker's" in caplog.text  # type: ignore[attr-defined]
    after = job_row(ctx, job_id)
    assert (after.state, after.message) == ("done", f"done by {heir.pid}")
    ctx.engine.dispose()


def test_a_job_out_of_attempts_fails_without_a_restart(tmp_path: Path, db_url: str) -> None:
    from datetime import timedelta

    from mrimaster.storage.tables import utcnow

    ctx = make_ctx(tmp_path, db_url, None)
    (job_id,) = add_jobs(ctx, 1)
    now = utcnow()
    with ctx.sessions() as db:
        for attempt in range(2):
            at = now + timedelta(seconds=10 * attempt)
            assert repo.claim_job(db, f"w:{attempt}", 5, 2, now=at) is not None
        late = now + timedelta(seconds=30)
        assert repo.claim_job(db, "w:late", 5, 2, now=late) is None
        assert repo.expire_jobs(db, 2, now=late) == 1
        case = db.get(Case, job_row(ctx, job_id).case_id)
        assert case is not None and case.status == "failed"
    assert job_row(ctx, job_id).state == "failed" and job_row(ctx, job_id).owner is None
    ctx.engine.dispose()
