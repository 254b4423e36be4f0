"""``mrimaster db upgrade`` and ``mrimaster cleanup``: a deployment's explicit steps (schema
migration before new processes start; clean-up of the store on a schedule)."""

from __future__ import annotations

import argparse

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="the web app's database: upgrade its schema",
                        description="Migrate the database MRIMASTER_DATABASE_URL names to this "
                        "version's schema (under a lock: safe beside starting processes).")
    dbs = db.add_subparsers(dest="db_command", required=True)
    up = dbs.add_parser("upgrade", help="migrate the schema to this version's, create the "
                        "first admin")
    up.set_defaults(handler=run_upgrade)
    dbs.add_parser("current", help="print the schema's revision").set_defaults(
        handler=run_current)
    c = sub.add_parser("cleanup", help="remove work files and stored files no case refers to",
                       description="Remove the web app's work files and the store's objects "
                       "that no database row refers to, when older than the grace period (so "
                       "never an upload or a job in progress). Run it on a schedule, from one "
                       "place; no process start does this.")
    c.add_argument("--grace-minutes", type=float, default=24 * 60,
                   help="keep what is younger than this (default 1440: a day)")
    c.set_defaults(handler=run_cleanup)


def run_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import start_up

    config = replace(load_serve_config(), auto_migrate=True)
    ctx, password = start_up(config, load_models=False)
    from mrimaster.storage.database import current_revision

    print(f"database schema at {current_revision(ctx.engine)}", flush=True)
    if password:
        print(f"created the admin account {config.admin_user!r} with the one-time password "
              f"{password}", flush=True)
    ctx.engine.dispose()
    return 0


def run_current(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.serving.config import load_serve_config
    from mrimaster.storage.database import current_revision, known_revisions, make_engine

    engine = make_engine(load_serve_config().database_url)
    print(f"{current_revision(engine) or 'none'} (this version's head: "
          f"{known_revisions()[1]})")
    engine.dispose()
    return 0


def run_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import build_context
    from mrimaster.storage import repository as repo

    if args.grace_minutes < 0:
        from mrimaster.errors import ConfigError

        raise ConfigError("--grace-minutes must not be negative", "e.g. 1440 (a day)")
    ctx = build_context(replace(load_serve_config(), auto_migrate=False), load_models=False)
    with ctx.sessions() as db:
        referenced = repo.referenced_digests(db)
    work, objects = ctx.store.cleanup(referenced, args.grace_minutes * 60)
    print(f"removed {work} work file(s) and {objects} unreferenced object(s) older than "
          f"{args.grace_minutes:g} minutes", flush=True)
    ctx.engine.dispose()
    return 0
