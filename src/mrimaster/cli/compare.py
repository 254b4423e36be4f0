"""``mrimaster compare``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="overlay the validation curves of several runs and "
                       "tabulate their held-out metrics and config differences")
    p.add_argument("runs", nargs="+", help="run folders or MLflow run IDs")
    p.add_argument("--out", type=Path, required=True, help="folder for curves.png, compare.md, "
                   "compare.json")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.evaluation.compare import compare_runs

    compare_runs(args.runs, args.out, settings.tracking_uri)
    print((args.out / "compare.md").read_text())
    print(f"curves: {args.out / 'curves.png'}")
    return 0
