"""``mrimaster serve``: the doctors' web app and its JSON API."""

from __future__ import annotations

import argparse
import logging

from mrimaster.settings import Settings

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the web app and its JSON API",
                       description="Start the web app (worklist, uploads, AI reads, review) "
                       "on an SQLite database under the data root, or on the database "
                       "MRIMASTER_DATABASE_URL names. The first start creates the admin "
                       "account (MRIMASTER_ADMIN_PASSWORD, else a one-time password is "
                       "printed).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-worker", action="store_true", help="run no segmentation jobs in this "
                   "process (a deployment with `mrimaster worker` processes; see "
                   "docs/scaling.md)")
    p.set_defaults(handler=run)
    sm = sub.add_parser("sagemaker", help="SageMaker-compatible inference server: GET /ping, "
                        "POST /invocations (port 8080)",
                        description="The classifier behind SageMaker's container contract: "
                        "GET /ping, POST /invocations with an image body or JSON "
                        '{"images": [base64, ...]}; answers carry the trust fields of '
                        "`mrimaster predict`.")
    sm.add_argument("--host", default="0.0.0.0")
    sm.add_argument("--port", type=int, default=8080)
    sm.add_argument("--model", default="default")
    sm.set_defaults(handler=run_sagemaker)


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from mrimaster.serving.app import create_app
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import build_context, create_first_admin
    from mrimaster.serving.jobs import JobRunner

    config = load_serve_config()
    ctx = build_context(config)
    password = create_first_admin(ctx)
    if password:
        print(f"first start: created the admin account {config.admin_user!r} with the "
              f"one-time password {password}\n  it must be changed at the first log-in (the "
              "My account page, or POST /api/me/password)", flush=True)
    db_kind = config.database_url.split(":", 1)[0]
    print(f"MRIMaster on http://{args.host}:{args.port}  (database: {db_kind}, files: "
          f"{config.app_dir}, classifier {ctx.models.version if ctx.models else '-'})",
          flush=True)
    app = create_app(ctx)
    # the single-process default runs the jobs too; --no-worker leaves them to `mrimaster worker`
    runner = None if getattr(args, "no_worker", False) else JobRunner(ctx).start()
    app.state.runner = runner
    try:
        # the app alone reads X-Forwarded-For, from MRIMASTER_TRUSTED_PROXIES only: uvicorn
        # would otherwise believe it from 127.0.0.1 (a client on loopback sets it itself)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", proxy_headers=False)
    finally:
        if runner is not None:
            runner.stop()
    return 0


def run_sagemaker(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from mrimaster.serving.models import ServedModels
    from mrimaster.serving.sagemaker import create_sagemaker_app

    models = ServedModels.load(settings, args.model)
    print(f"SageMaker inference server on {args.host}:{args.port} (model {models.version}, "
          f"{models.classifier.runtime})", flush=True)
    uvicorn.run(create_sagemaker_app(models), host=args.host, port=args.port, log_level="info")
    return 0
