"""Choosing the device: the torch device for training, and where inference runs.

torch is imported only when a GPU may be there (an NVIDIA driver is loaded), so that choosing
``auto`` on a CPU-only machine costs nothing on the fast, torch-free inference path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrimaster.errors import ConfigError

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def _nvidia_driver_loaded() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def resolve_device(name: str) -> Any:
    """``auto`` -> a CUDA GPU when there is one, else the CPU; ``cpu``/``cuda`` as named.

    Returns:
        A ``torch.device``.

    Raises:
        ConfigError: unknown name, or ``cuda`` was asked for and there is no GPU.
    """
    import torch

    return torch.device(inference_device(name))


def inference_device(name: str) -> str:
    """``cpu`` or ``cuda`` for ``name`` (``auto``: a CUDA GPU when there is one).

    Raises:
        ConfigError: unknown name, or ``cuda`` was asked for and there is no GPU.
    """
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}", f"choose one of: {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not _nvidia_driver_loaded()):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if name == "cuda":
        raise ConfigError("device cuda asked for, but no CUDA GPU is available",
                          "use --device cpu (or auto)")
    return "cpu"


def use_bf16(precision: str, device: Any) -> bool:
    """Whether to train under bf16 autocast: ``bf16`` yes, ``fp32`` no, ``auto`` on CUDA and
    on CPUs with AVX512-BF16 or AMX (where it was 1.6-1.7x faster per step than fp32 here)."""
    if precision != "auto":
        return precision == "bf16"
    if getattr(device, "type", str(device)) == "cuda":
        return True
    return cpu_has_bf16()


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX), as OpenVINO reports it;
    ``False`` where OpenVINO is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
