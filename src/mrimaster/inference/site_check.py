"""Check an exported variant on the machine that runs it, before trusting it.

A reduced-precision variant (int8, bf16) was kept at export because it agreed with PyTorch on
the validation part *on the exporting CPU*. Quantised arithmetic differs between CPUs and engine
versions (AVX2, AVX-512 VNNI, AMX take different kernels): the same OpenVINO int8 graph agreed
0.9944 on one CPU and 0.9888 on another, under the 0.99 keep rule. So the model folder carries a
small *check set* (``check.npz``: validation slices and PyTorch's fp32 logits for them), and
the first time a variant is loaded on a CPU and engine version it has not been checked on, it
runs the check set and compares with the recorded fp32 logits (:func:`check_here`). It must
do as well as it did where it was validated:

- top-1 agreement with PyTorch on the check set not below the variant's own agreement on the
  same slices at export (so a slice that already flipped there, allowed by the export's
  validation keep rule of :data:`MIN_AGREEMENT`, does not fail it; a new flip does: with a few
  dozen slices, the check set cannot resolve 1% on its own), and
- largest logit difference <= :data:`FP32_TOLERANCE` for an fp32 variant (the export's rule),
  else <= :data:`SLACK` times the largest difference the export accepted on the whole
  validation part.

The result is cached per graph, CPU signature and engine version (:func:`site_signature`) in
``runtime-checks.json`` under the cache folder, so later loads cost nothing. A variant that
fails is not used: :func:`mrimaster.inference.onnx_runtime.choose_variant` falls back to the
next one, and the reason is kept with the loaded model (``meta["runtime_choice"]``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.atomic import write_whole

log = logging.getLogger(__name__)

CHECK_FILE = "check.npz"
CACHE_FILE = "runtime-checks.json"
CHECK_SIZE = 32
"""Validation slices in a check set (at the shipped model's 192 px, about 0.6 MB)."""
MIN_AGREEMENT = 0.99
"""Smallest top-1 agreement with PyTorch for a reduced-precision variant, at export (on the
validation part) and here (on the check set)."""
FP32_TOLERANCE = 0.02
"""Largest logit difference allowed between an fp32 variant and PyTorch (other convolution
algorithms sum in another order: about 5e-3 on the shipped model's logits, which reach 20)."""
SLACK = 2.0
"""A reduced-precision variant may differ from PyTorch on the check set by up to this multiple
of the largest difference the export accepted on the whole validation part."""
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
             "amx_int8", "amx_bf16", "fma", "sse4_2", "asimd", "sve")
"""CPU features that change which kernels an engine picks (x86 and Arm)."""


@dataclass
class CheckResult:
    """What the check of one variant on this machine found.

    Attributes:
        ok: The variant may be used here.
        agreement: Top-1 agreement with the recorded fp32 logits, in [0, 1].
        min_agreement: The agreement it had on the same slices at export.
        max_logit_difference: Largest absolute logit difference.
        limit: The largest difference allowed.
        n: Slices checked.
        signature: :func:`site_signature` of this machine and engine.
        checked_at: ISO 8601 time of the check.
        cached: Read from the cache instead of run now.
    """

    ok: bool
    agreement: float
    min_agreement: float
    max_logit_difference: float
    limit: float
    n: int
    signature: str
    checked_at: str
    cached: bool = False

    def describe(self) -> str:
        """One line for ``predict`` and the logs."""
        verdict = "passed" if self.ok else "failed"
        return (f"{verdict} its check on this CPU ({self.n} stored slices: top-1 agreement "
                f"{self.agreement:.3f} (>= {self.min_agreement:.3f}), largest logit difference "
                f"{self.max_logit_difference:.3f} (<= {self.limit:.3f})"
                f"{', cached' if self.cached else ''})")


def choose_check_slices(n: int, size: int = CHECK_SIZE) -> np.ndarray:
    """Indices of ``size`` slices spread evenly over ``n`` validation slices (deterministic)."""
    return np.unique(np.linspace(0, n - 1, min(size, n)).round().astype(int))


def write_check_set(folder: Path, images: np.ndarray, logits: np.ndarray,
                    accepted: dict[str, dict[str, float]], source_sha256: str) -> Path:
    """Write ``folder/check.npz``.

    Args:
        images: ``(K, S, S)`` uint8 prepared slices.
        logits: ``(K, C)`` float32 PyTorch fp32 logits of ``images``.
        accepted: ``{variant: {"max_logit_difference": largest on the whole validation part,
            "agreement": top-1 agreement on ``images``}}`` at export.
        source_sha256: SHA-256 of the ``model.pt`` the logits come from.
    """
    meta = {"source_sha256": source_sha256, "accepted": accepted, "n": int(len(images))}
    path = folder / CHECK_FILE
    with open(path, "wb") as fh:
        np.savez_compressed(fh, images=np.asarray(images, np.uint8),
                            logits=np.asarray(logits, np.float32),
                            meta=np.array(json.dumps(meta)))
    return path


def read_check_set(folder: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    """``(images, logits, meta)`` of ``folder/check.npz``, or ``None`` when there is none or it
    cannot be read."""
    path = folder / CHECK_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as blob:
            return (blob["images"], blob["logits"].astype(np.float32),
                    json.loads(str(blob["meta"])))
    except Exception:  # a damaged file: no check set, so no reduced precision
        log.warning("%s cannot be read: the check set is ignored", path)
        return None


def cpu_signature() -> str:
    """The CPU model and the features that pick kernels, e.g. ``AMD EPYC 9R14|avx2,avx512f``."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    return f"{model}|{','.join(f for f in CPU_FLAGS if f in flags)}"


def engine_version(engine: str) -> str:
    """``openvino 2025.1.0``: the installed version of an engine's package."""
    try:
        return f"{engine} {importlib.metadata.version(engine)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{engine} (version unknown)"


def site_signature(engine: str) -> str:
    """What the check's result depends on besides the graph: CPU and engine version."""
    return f"{cpu_signature()}|{engine_version(engine)}"


def _cache_key(graph_sha256: str, signature: str) -> str:
    return hashlib.sha256(f"{graph_sha256}|{signature}".encode()).hexdigest()[:32]


def _read_cache(cache_dir: Path | None) -> dict[str, Any]:
    if cache_dir is None or not (cache_dir / CACHE_FILE).is_file():
        return {}
    try:
        data = json.loads((cache_dir / CACHE_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache_dir: Path | None, key: str, result: CheckResult) -> None:
    if cache_dir is None:
        return
    entries = _read_cache(cache_dir)
    entries[key] = {k: v for k, v in asdict(result).items() if k != "cached"}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_whole(cache_dir / CACHE_FILE, json.dumps(entries, indent=1))
    except OSError as exc:  # a read-only home: check again next time
        log.warning("cannot cache the runtime check in %s (%s)", cache_dir, exc)


def limits_for(variant: str, precision: str, meta: dict[str, Any]
               ) -> tuple[float, float] | None:
    """``(smallest agreement, largest logit difference)`` allowed for ``variant``; ``None``
    when the check set has no record of it (not kept at export)."""
    accepted = meta.get("accepted", {}).get(variant)
    if not isinstance(accepted, dict):
        return None
    if precision == "fp32":
        return 1.0, FP32_TOLERANCE
    return float(accepted["agreement"]), SLACK * float(accepted["max_logit_difference"])


def compare_logits(logits: np.ndarray, reference: np.ndarray, limits: tuple[float, float],
                   signature: str) -> CheckResult:
    """The check's verdict from a variant's ``(K, C)`` logits and the recorded ``reference``."""
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean())
    diff = float(np.abs(logits - reference).max())
    least, limit = limits
    return CheckResult(agreement >= least - 1e-9 and diff <= limit, agreement, least, diff,
                       limit, int(len(reference)), signature,
                       datetime.now(UTC).isoformat(timespec="seconds"))


def check_here(folder: Path, variant: str, engine: str, precision: str, graph_sha256: str,
               forward: Any, cache_dir: Path | None) -> CheckResult | str:
    """Run (or read from the cache) the check of ``variant`` on this machine.

    Args:
        folder: The model folder (with ``check.npz``).
        forward: ``(K, S, S) uint8 -> (K, C) logits`` of the variant, called only when the
            cache has no result.
        cache_dir: Where ``runtime-checks.json`` is kept (``None``: not cached).

    Returns:
        The result, or why the variant cannot be checked (no check set, none for it).
    """
    check = read_check_set(folder)
    if check is None:
        return f"{folder} has no check set ({CHECK_FILE}) to check it on this CPU"
    images, reference, meta = check
    limits = limits_for(variant, precision, meta)
    if limits is None:
        return f"the check set of {folder} has no record of {variant}"
    signature = site_signature(engine)
    key = _cache_key(graph_sha256, signature)
    cached = _read_cache(cache_dir).get(key)
    if isinstance(cached, dict):
        try:
            return CheckResult(**cached, cached=True)
        except TypeError:
            pass  # an older cache layout: check again
    result = compare_logits(np.asarray(forward(images), np.float32), reference, limits,
                            signature)
    log.debug("%s %s", variant, result.describe())
    _write_cache(cache_dir, key, result)
    return result
