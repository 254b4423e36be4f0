"""Data-parallel training under ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc-per-node N -m mrimaster.cli.main train ...`` (or ``seg train``) starts N
processes; each takes ``1/N`` of every global batch (the config's ``batch_size``) through a
:class:`~torch.utils.data.distributed.DistributedSampler`, gradients are averaged across
processes, and only rank 0 logs, tracks and writes the run folder. Backend: NCCL on GPUs
(BatchNorm layers become SyncBatchNorm), gloo on CPUs, where BatchNorm keeps per-process
statistics (SyncBatchNorm needs a GPU). Several machines: the same command on each, with
``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint`` (see the README's *Deploy* section).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mrimaster.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``world`` processes, this one ``rank`` (``local_rank`` on
    its machine); ``enabled`` when started by torchrun."""

    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ...), or return a
    disabled context for a plain run."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return DistContext()
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if rank != 0:  # rank 0 speaks for the run
        logging.getLogger().setLevel(logging.WARNING)
    return DistContext(True, rank, world, local)


def per_process_batch(global_batch: int, ctx: DistContext) -> int:
    """The batch each process takes so that the global batch stays the config's."""
    if global_batch % ctx.world:
        raise ConfigError(f"batch_size {global_batch} does not split over {ctx.world} "
                          "processes", f"use a multiple of {ctx.world}")
    return global_batch // ctx.world


def sampler(dataset: Any, ctx: DistContext, seed: int, drop_last: bool) -> Any:
    """Each process's share of a shuffled epoch; together the ``world`` shares of batch k are
    exactly the single-process run's batch k under the same seed."""
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
                              seed=seed, drop_last=drop_last)


def wrap(net: nn.Module, ctx: DistContext) -> nn.Module:
    """``net`` in DistributedDataParallel (SyncBatchNorm on GPUs)."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(net.parameters()).device
    if device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return DistributedDataParallel(net, device_ids=[device.index])
    return DistributedDataParallel(net)


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or ``net`` itself)."""
    inner = getattr(net, "module", None)
    return inner if isinstance(inner, nn.Module) else net


def finish(ctx: DistContext) -> None:
    """Wait for every process, then leave the process group."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
