"""Load a classifier for inference in the runtime asked for (``--runtime``).

``auto`` takes the first validated variant of the model's ONNX export whose engine is
installed (:data:`mrimaster.inference.graph.VARIANTS`, fastest first) and that passes
its check on this machine (:mod:`mrimaster.inference.site_check`), and falls back to PyTorch,
which is always available. torch is imported only when PyTorch runs the model. The loaded
model's ``meta["runtime_choice"]`` says which runtime runs it and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.images import model_input
from mrimaster.inference.graph import VARIANTS, open_graph
from mrimaster.inference.onnx_runtime import (
    choose_variant,
    graph_sha256,
    load_variant,
    variant_problem,
)
from mrimaster.inference.runtime import ClassifierModel
from mrimaster.inference.site_check import CheckResult, check_here
from mrimaster.models.paths import resolve_model_path


def check_variant(folder: Path, name: str, cache_dir: Path | None) -> CheckResult | str:
    """:func:`mrimaster.inference.site_check.check_here` for variant ``name`` of ``folder``."""
    spec = VARIANTS[name]
    graph = folder / spec.graph

    def forward(images: np.ndarray) -> np.ndarray:
        return np.asarray(open_graph(graph, name)(model_input(images))["logits"])

    return check_here(folder, name, spec.engine, spec.precision, graph_sha256(graph), forward,
                      cache_dir)


def site_problem(folder: Path, name: str, cache_dir: Path | None,
                 checks: dict[str, CheckResult]) -> str | None:
    """Why variant ``name`` must not run on this machine: it failed its check here, or it is
    reduced-precision and there is no check set to check it with; records results in
    ``checks``."""
    result = check_variant(folder, name, cache_dir)
    if isinstance(result, str):  # no check set: fp32 graphs were checked at export, enough
        return None if VARIANTS[name].precision == "fp32" else result
    checks[name] = result
    return None if result.ok else result.describe()


def load_for_inference(ref: str | Path, models_dir: Path, runtime: str = "auto",
                       device: str = "auto", cache_dir: Path | None = None) -> ClassifierModel:
    """The classifier ``ref`` (``default``, run or model folder, ``model.pt``) in ``runtime``.

    Args:
        cache_dir: Where the results of the per-machine checks are kept
            (``runtime-checks.json``); ``None`` checks again at every load.

    Raises:
        ModelError: unknown runtime; ``onnx``/``openvino`` asked for but not usable here (the
            reason says why: engine not installed, no validated export, stale export, failed
            its check on this machine).
    """
    path = resolve_model_path(ref, models_dir)
    skipped: list[str] = []
    checks: dict[str, CheckResult] = {}

    def problem(folder: Path, name: str) -> str | None:
        why = variant_problem(folder, name) or site_problem(folder, name, cache_dir, checks)
        if why:
            skipped.append(f"{name}: {why}")
        return why

    variant, where = choose_variant(path.parent, runtime, device, tuple(VARIANTS), problem)
    model: ClassifierModel
    if variant is not None:
        model = load_variant(path.parent, variant)
    else:
        from mrimaster.models.checkpoint import load_classifier

        model = load_classifier(path, where)
    model.meta["runtime_choice"] = runtime_choice(runtime, variant, checks, skipped)
    return model


def runtime_choice(asked: str, variant: str | None, checks: dict[str, CheckResult],
                   skipped: list[str]) -> dict[str, Any]:
    """``{"runtime", "why", "skipped"}``: which runtime runs the model and why."""
    if variant is None:
        why = ("asked for (--runtime torch)" if asked == "torch" else
               "no exported variant can run here" if skipped else
               "PyTorch runs on the GPU" if asked == "auto" else "asked for")
        return {"runtime": "torch", "why": why, "skipped": skipped}
    why = f"the fastest validated variant {'here' if asked == 'auto' else 'of ' + asked}"
    if variant in checks:
        why += f"; {checks[variant].describe()}"
    return {"runtime": variant, "why": why, "skipped": skipped}
