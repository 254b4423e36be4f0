"""``mrimaster worker``: runs segmentation jobs only (no web pages), beside any number of
others and of ``mrimaster serve --no-worker`` processes sharing one database and one store."""

from __future__ import annotations

import argparse
import signal
from types import FrameType

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run segmentation jobs (no web pages)",
                       description="Claim and run the web app's segmentation jobs from the "
                       "database MRIMASTER_DATABASE_URL names, with files in "
                       "MRIMASTER_STORE_URL; several workers may run on several hosts. A job "
                       "whose worker dies is taken over once its lease "
                       "(MRIMASTER_JOB_LEASE_S) expires. See docs/scaling.md.")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at the "
                   "queue when it is empty (default 2)")
    p.add_argument("--once", action="store_true", help="run the jobs waiting now, then exit")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import start_up
    from mrimaster.serving.jobs import JobRunner

    config = load_serve_config()
    ctx, password = start_up(config)
    if password:
        print(f"first start: created the admin account {config.admin_user!r} with the "
              f"one-time password {password}", flush=True)
    runner = JobRunner(ctx, poll_s=args.poll)
    print(f"MRIMaster worker {runner.name}: lease {config.job_lease_s:g} s, at most "
          f"{config.job_max_attempts} attempts per job, each at most "
          f"{config.job_timeout_s:g} s", flush=True)
    if args.once:
        print(f"{runner.run_pending()} job(s) run", flush=True)
        return 0

    def stop(_signum: int, _frame: FrameType | None) -> None:
        runner.stop(timeout=0)  # the running job ends; its lease lapses if it does not

    signal.signal(signal.SIGTERM, stop)
    try:
        runner.loop()
    except KeyboardInterrupt:
        runner.stop(timeout=0)
    return 0
