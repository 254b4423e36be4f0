"""Entry point of the ``mrimaster`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mrimaster.cli import (
    brain_check,
    compare,
    data,
    db,
    dicom,
    evaluate,
    explain,
    models,
    pacs,
    predict,
    seg,
    serve,
    sweep,
    train,
    worker,
)
from mrimaster.errors import MRIMasterError
from mrimaster.settings import load_settings

COMMAND_GROUPS = [data, train, sweep, evaluate, compare, predict, explain, models, seg, serve,
                  dicom, pacs, worker, db, brain_check]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrimaster", description="Brain-MRI assistant.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.handler(args, load_settings()))
    except MRIMasterError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: no traceback for end users
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc}\n  hint: rerun with --debug for "
              "details and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
