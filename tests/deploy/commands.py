"""What a container of the image runs: ``deploy/entrypoint.sh`` with its arguments, turned into
the ``mrimaster`` command line it would exec, parsed by the CLI's own argparse parser."""

from __future__ import annotations

import argparse
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from mrimaster.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


def entrypoint_argv(args: Sequence[str], folder: Path,
                    env: Mapping[str, str] | None = None) -> list[str]:
    """The ``mrimaster`` arguments ``entrypoint.sh ARGS`` execs, read from a stand-in
    ``mrimaster`` (in ``folder``) that prints them one a line."""
    fake = folder / "mrimaster"
    fake.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MRIMASTER_")}
    run_env = {**clean, **(env or {}), "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["sh", str(ENTRYPOINT), *args], env=run_env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def parse_command(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed as ``mrimaster ARGV`` (argparse exits on an unknown command or option,
    which fails the test)."""
    return build_parser().parse_args(list(argv))
