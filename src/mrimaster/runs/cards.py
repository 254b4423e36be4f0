"""What every model card (2D and 3D) opens with, and the size limit of a shipped file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mrimaster.provenance import git_state, version_or_unknown

MAX_MODEL_BYTES = 10 * 1024 * 1024
"""Largest model file the project ships (10 MB)."""


def exported_line() -> str:
    """``- **Exported:** date by mrimaster version, commit``: the first line of every card."""
    git = git_state(Path(__file__).parent)
    commit = f"commit {git['commit'][:7]}" if git else "commit unknown"
    return (f"- **Exported:** {datetime.now(UTC).date().isoformat()} by mrimaster "
            f"{version_or_unknown('mrimaster')}, {commit}")


def run_lines(run: dict[str, Any] | None) -> list[str]:
    """What ``run.json`` recorded when the run started (older runs have none)."""
    if not run:
        return []
    git = run.get("git") or {}
    commit = (f"commit {git['commit'][:10]}{' with uncommitted changes' if git['dirty'] else ''}"
              if git else "outside git")
    data = "; ".join(f"`{d['folder']}` {d['files']} files, SHA-256 {d['sha256'][:12]}"
                     for d in run.get("data", []))
    libs = ", ".join(f"{k} {v}" for k, v in run.get("libraries", {}).items())
    return [f"- **Run recorded** (`run.json`): `{run['command']}`, mrimaster "
            f"{run.get('mrimaster')}, {commit}; Python {run.get('python')}, {libs}; data: "
            f"{data or 'none recorded'}."]
