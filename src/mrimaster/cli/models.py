"""``mrimaster models``: list the registered networks."""

from __future__ import annotations

import argparse

from mrimaster.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.models.registry import MODELS

    for name, spec in MODELS.items():
        pre = "ImageNet" if spec.pretrainable else "scratch"
        print(f"{name:<20} {spec.image_size:>4} px  {pre:<8}  {spec.description}")
    return 0
