"""Checkpoints that survive an interruption: ``last.pt`` in a training run folder.

After every epoch :func:`save_last` writes ``last.pt`` whole (:mod:`mrimaster.atomic`: a
run killed while writing keeps the previous one): the network,
optimiser and scheduler states, the epochs done, the history, the best score, the model's
``meta``, the recipe (the portable ``config.yaml`` dict) and every random state the next epoch
draws from (torch, NumPy's global generator, the patch sampler's ``Generator``, the MONAI
transforms inside the :class:`~mrimaster.segmentation.augment.PatchAugmenter`, Python's
``random``), one set per process under torchrun. A run started again into the same folder with
the same recipe (:func:`load_last`) continues from the next epoch and ends with the weights an
uninterrupted run would have had; another recipe is refused. A run that finishes deletes
``last.pt`` (``model.pt`` + ``metrics.json`` mark it finished), so shipped folders stay small.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrimaster.atomic import discard_leftovers, leftovers, replaced_whole
from mrimaster.errors import ConfigError
from mrimaster.runs.distributed import DistContext
from mrimaster.segmentation.augment import PatchAugmenter

log = logging.getLogger(__name__)

LAST = "last.pt"
FORMAT = "mrimaster-seg-checkpoint/1"

NOT_RECIPE = frozenset({"data_dir", "out_dir", "device", "num_threads", "track",
                        "experiment", "registered_model"})
"""Training settings that say where or how fast a run goes, not what it learns from: a
``last.pt`` or a finished fold (:func:`mrimaster.segmentation.crossval.finished`) is kept when
everything else matches. ``grid`` (where inference places its patches) is one of them too in a
run without validation cases, where it changes nothing that training does."""


def recipe_differences(saved: dict[str, Any], wanted: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """The recipe settings (all but :data:`NOT_RECIPE`) on which two config dicts differ.

    Args:
        saved: The config a run was started with (``config_to_dict`` form).
        wanted: The config asked for now.
        defaults: Values of settings that ``saved`` lacks (added after it was written).

    Returns:
        ``"<key> <saved> here, <wanted> asked"`` per differing setting, sorted by key.
    """
    saved = {**(defaults or {}), **saved}
    ignored = NOT_RECIPE | (set() if wanted.get("val_cases") else {"grid"})
    keys = sorted(k for k in wanted.keys() - ignored if saved.get(k) != wanted[k])
    return [f"{k} {saved.get(k)} here, {wanted[k]} asked" for k in keys]


def config_defaults(cls: type) -> dict[str, Any]:
    """Each field's default of a config dataclass, as ``config_to_dict`` writes them."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = str(value) if isinstance(value, Path) else \
            list(value) if isinstance(value, tuple) else value
    return out


def _monai_states(augmenter: PatchAugmenter) -> list[np.random.RandomState]:
    """The ``RandomState`` of every MONAI transform in ``augmenter`` (nested ones included),
    in a fixed order."""
    from monai.transforms import Randomizable

    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable) and id(obj.R) not in seen:
            seen.add(id(obj.R))
            found.append(obj.R)
        for value in vars(obj).values():
            if type(value).__module__.startswith("monai.") and hasattr(value, "__dict__"):
                walk(value)

    for value in vars(augmenter).values():
        if type(value).__module__.startswith("monai."):
            walk(value)
    return found


def _legacy_out(state: Any) -> list[Any]:
    """A ``RandomState.get_state()`` tuple with plain lists (loadable with weights_only)."""
    name, keys, pos, has_gauss, gauss = state
    return [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(gauss)]


def _legacy_in(state: list[Any]) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, gauss = state
    return (name, np.asarray(keys, np.uint32), pos, has_gauss, gauss)


def random_states(rng: np.random.Generator, augmenter: PatchAugmenter) -> dict[str, Any]:
    """Every random state this process's next training epoch draws from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _legacy_out(np.random.get_state()),
        "python": random.getstate(),
        "rng": rng.bit_generator.state,
        "augmenter": [_legacy_out(r.get_state()) for r in _monai_states(augmenter)],
    }


def restore_random_states(states: dict[str, Any], rng: np.random.Generator,
                          augmenter: PatchAugmenter) -> None:
    """Set the generators :func:`random_states` read back to ``states``."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and \
            len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(_legacy_in(states["numpy"]))
    random.setstate(states["python"])
    rng.bit_generator.state = states["rng"]
    monai = _monai_states(augmenter)
    if len(monai) != len(states["augmenter"]):
        raise ConfigError(f"{LAST} holds {len(states['augmenter'])} augmentation random "
                          f"states, this version has {len(monai)}",
                          f"delete {LAST} to restart the run from epoch 1")
    for r, s in zip(monai, states["augmenter"], strict=True):
        r.set_state(_legacy_in(s))


def _gather(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` of every process, by rank (a collective call under torchrun)."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def save_last(run_dir: Path, ctx: DistContext, *, net: torch.nn.Module,
              optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int,
              history: list[dict[str, Any]], best: float, meta: dict[str, Any],
              recipe: dict[str, Any], rng: np.random.Generator,
              augmenter: PatchAugmenter) -> None:
    """Write ``run_dir/last.pt`` atomically after ``epoch`` (1-based) epochs.

    Every process must call it (their random states are gathered); only the main one writes.

    Args:
        run_dir: The run folder.
        ctx: This process's place in the torchrun group.
        net: The network (not the DDP wrapper).
        optimizer: Its optimiser.
        scheduler: The learning-rate scheduler.
        epoch: Epochs done.
        history: One row per epoch done.
        best: Best validation score so far (``-inf`` when none).
        meta: The model's ``meta`` (epoch and score of the kept model, run, init).
        recipe: The run's config dict (as ``config.yaml`` holds it).
        rng: The patch sampler's generator.
        augmenter: The patch augmenter.
    """
    states = _gather(ctx, random_states(rng, augmenter))
    if not ctx.is_main:
        return
    blob = {"format": FORMAT, "epoch": epoch, "history": history, "best": best,
            "meta": meta, "recipe": recipe, "random": states,
            "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    discard_leftovers(run_dir / LAST)  # of a save that was killed
    with replaced_whole(run_dir / LAST, durable=True) as tmp:
        torch.save(blob, tmp)


def load_last(run_dir: Path, ctx: DistContext, recipe: dict[str, Any],
              defaults: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The checkpoint of an interrupted run in ``run_dir``, when there is one.

    Every process must call it: under torchrun they check that they all found the same one.

    Args:
        run_dir: The run folder.
        ctx: This process's place in the torchrun group.
        recipe: The config dict of the run asked for now.
        defaults: Values of settings that an older checkpoint's recipe lacks.

    Returns:
        What :func:`save_last` wrote, or ``None`` without ``last.pt``.

    Raises:
        ConfigError: ``last.pt`` is unreadable or belongs to another recipe, or the processes
            of a torchrun group found different checkpoints.
    """
    path = run_dir / LAST
    fix = f"use a new --out folder, or delete {path} to start this one from epoch 1"
    blob: dict[str, Any] | None = None
    problem: ConfigError | None = None
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for damaged files
            problem = ConfigError(f"{path} is not a readable checkpoint "
                                  f"({type(exc).__name__})", fix)
        else:
            if not isinstance(blob, dict) or blob.get("format") != FORMAT:
                problem = ConfigError(f"{path} is not an MRIMaster segmentation checkpoint",
                                      fix)
            elif differ := recipe_differences(blob["recipe"], recipe, defaults):
                problem = ConfigError(f"{path} is the checkpoint of another recipe "
                                      f"({', '.join(differ)})", fix)
    # under torchrun every process reads the folder (it must be shared by all machines); a
    # process that resumed while another started afresh would wait for it forever
    seen = _gather(ctx, (blob or {}).get("epoch", 0) if problem is None else -1)
    if problem is None and len(set(seen)) > 1:
        problem = ConfigError(f"the processes found different checkpoints in {run_dir} "
                              f"(epochs done: {seen})", "resume from a folder that every "
                              f"machine sees, or delete {path} to start from epoch 1")
    if problem is not None:
        raise problem
    return blob


def resume(blob: dict[str, Any], ctx: DistContext, *, net: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scheduler: Any, rng: np.random.Generator,
           augmenter: PatchAugmenter) -> None:
    """Load a checkpoint's network, optimiser, scheduler and (this process's) random states.

    With another number of processes than the interrupted run's, the random states are not
    restored (the patches then differ from an uninterrupted run's).
    """
    net.load_state_dict(blob["net"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    states = blob["random"]
    if len(states) == ctx.world:
        restore_random_states(states[ctx.rank], rng, augmenter)
    else:
        log.warning("%s was written by %d processes, this run has %d: random streams not "
                    "restored", LAST, len(states), ctx.world)


def remove_last(run_dir: Path) -> None:
    """Delete ``last.pt`` (and half-written ones, also ``last.pt.tmp`` of older versions) of a
    finished run."""
    for path in [run_dir / LAST, run_dir / f"{LAST}.tmp", *leftovers(run_dir / LAST)]:
        path.unlink(missing_ok=True)
