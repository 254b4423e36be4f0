"""``mrimaster seg train``: patch-based 3D U-Net training into a run folder.

Reads top to bottom: the config, the loss (Dice + cross-entropy per region, masked where a
dataset does not define a region), one epoch (bf16 autocast where the processor supports it),
validation, and :func:`run_seg_training`. Training patches (crops biased towards tumour, in
endless batches) come from :mod:`mrimaster.segmentation.patches`, their augmentation from
:mod:`mrimaster.segmentation.augment` (spatial steps on image and labels together, intensity
steps and modality dropout on the image only). Without validation cases the last epoch's
weights are kept (nnU-Net's choice: no selection on a handful of cases). After every epoch
``last.pt`` (:mod:`mrimaster.segmentation.checkpoint`) holds what an interrupted run needs to
continue: started again into its folder with the same recipe, it does.

Fine-tuning (``init``): the network starts from a trained model's weights (same modalities and
widths, else :class:`~mrimaster.errors.ModelError`) at the lower learning rate ``init_lr``, on
the cases of a reviewed export (``reviewed_dir``, :mod:`mrimaster.segmentation.reviewed`) mixed
with original training cases (``train_cases`` under ``data_dir``: replay, so that the model
does not forget them); every batch draws from both uniformly by case. The run folder records
the init model's path and SHA-256 (``run.json``, ``config.yaml``) and gets a ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from tqdm import tqdm

from mrimaster.config import config_to_dict, save_config
from mrimaster.device import resolve_device, use_bf16
from mrimaster.errors import ConfigError, ModelError
from mrimaster.models.paths import file_sha256, resolve_model_path
from mrimaster.provenance import portable, run_record
from mrimaster.runs.data_roots import dataset_dir, under_root
from mrimaster.runs.distributed import (
    finish,
    init_distributed,
    per_process_batch,
    wrap,
)
from mrimaster.runs.tracking import Tracker
from mrimaster.seeding import seeded
from mrimaster.segmentation.augment import AugmentConfig, PatchAugmenter
from mrimaster.segmentation.cases import MODALITIES, Case, find_case
from mrimaster.segmentation.checkpoint import (
    config_defaults,
    load_last,
    remove_last,
    resume,
    save_last,
)
from mrimaster.segmentation.metrics import mean_scores, region_scores
from mrimaster.segmentation.model import Segmenter, build_unet, load_segmenter, save_segmenter
from mrimaster.segmentation.patches import Batch, TrainCase, load_training_case, patch_batches
from mrimaster.segmentation.reviewed import read_reviewed_dataset
from mrimaster.segmentation.run_report import plot_history, write_finetune_card
from mrimaster.segmentation.sliding_window import GRIDS
from mrimaster.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class SegTrainConfig:
    """A segmentation training run; saved as ``config.yaml``.

    Attributes:
        data_dir: Root the case paths are relative to (default ``<data root>/brats-mini``).
        train_cases: Case folders (relative to ``data_dir``) to train on.
        val_cases: Case folders for validation Dice each epoch and checkpoint selection; empty:
            no validation, the last epoch is kept.
        modalities: Input channels, from ``flair``, ``t1``, ``t1ce``, ``t2``. A channel that
            no training case has stays zero in training; inference then ignores it.
        modality_dropout: Probability of blanking each present channel of a patch (at least
            one is kept); a model trained with it > 0 accepts cases missing a modality.
        patch: Patch size (multiples of 8).
        channels: U-Net widths.
        epochs: Epochs; each is ``iterations`` optimiser steps.
        iterations: Steps per epoch.
        batch_size: Patches per step.
        lr: AdamW learning rate (cosine decay).
        tumour_fraction: Share of patches centred on a tumour voxel.
        seed: Seed of sampling, augmentation and initialisation.
        augment: nnU-Net-style augmentation (:mod:`mrimaster.segmentation.augment`); off:
            mirroring and modality dropout only.
        precision: ``auto`` (bf16 autocast where the processor supports it, else fp32),
            ``fp32`` or ``bf16``.
        spacing: Voxel size (mm) cases are resampled to; recorded in the model file.
        grid: The sliding window's patch grid at inference
            (:data:`mrimaster.segmentation.sliding_window.GRIDS`), recorded in the model file:
            ``even`` unless a recipe says ``monai``; fine-tuning keeps the init model's.
        device: ``auto``, ``cpu`` or ``cuda``.
        num_threads: Torch CPU threads (0: default).
        out_dir: Run folder (default ``<runs dir>/seg-<timestamp>``).
        track: Log to MLflow.
        experiment: MLflow experiment.
        registered_model: Name in the MLflow model registry (when tracking; empty: none).
        init: Model (run folder or ``model.pt``) whose weights training starts from
            (fine-tuning); its modalities and widths must equal ``modalities``/``channels``.
        init_lr: Learning rate used instead of ``lr`` when ``init`` is set: 4x lower than
            training from scratch (5e-4 vs 2e-3), so that fine-tuning adjusts the model rather
            than overwriting what it learnt (benchmarks/finetune_loop.py: 5e-4 x 400 steps
            raised Dice on 4 corrected cases by 0.048 with held-out cases within 0.01;
            2e-4 x 200 steps barely moved them).
        reviewed_dir: A reviewed export (``dataset.json`` + BraTS-layout cases, see
            :mod:`mrimaster.segmentation.reviewed`); all its cases are trained on, beside
            ``train_cases`` (which then are the replayed original cases).
    """

    data_dir: Path | None = None
    train_cases: list[str] = field(default_factory=list)
    val_cases: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=lambda: list(MODALITIES))
    modality_dropout: float = 0.25
    patch: list[int] = field(default_factory=lambda: [64, 64, 64])
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    epochs: int = 20
    iterations: int = 40
    batch_size: int = 2
    lr: float = 2e-3
    tumour_fraction: float = 0.67
    seed: int = 0
    augment: bool = True
    precision: str = "auto"
    spacing: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    grid: str = "even"
    device: str = "auto"
    num_threads: int = 0
    out_dir: Path | None = None
    track: bool = True
    experiment: str = "mrimaster-segmentation"
    registered_model: str = "mrimaster-segmenter"
    init: Path | None = None
    init_lr: float = 5e-4
    reviewed_dir: Path | None = None

    def __post_init__(self) -> None:
        bad = sorted(set(self.modalities) - set(MODALITIES))
        if bad or not self.modalities:
            raise ConfigError(f"modalities {self.modalities} invalid",
                              f"choose from {', '.join(MODALITIES)}")
        factor = 2 ** (len(self.channels) - 1)
        if len(self.patch) != 3 or any(p % factor for p in self.patch):
            raise ConfigError(f"patch {self.patch} must be 3 sizes, multiples of {factor}")
        if not self.train_cases and self.reviewed_dir is None:
            raise ConfigError("train_cases is empty", "list case folders to train on")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision {self.precision!r} unknown", "use auto, fp32 or bf16")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ConfigError(f"spacing {self.spacing} must be 3 positive sizes in mm")
        if self.grid not in GRIDS:
            raise ConfigError(f"grid {self.grid!r} unknown", f"use {' or '.join(GRIDS)}")


_DICE = DiceLoss(sigmoid=True, reduction="none", smooth_nr=1e-5, smooth_dr=1e-5)


def region_loss(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Soft Dice + binary cross-entropy per region, averaged over the regions each patch's
    dataset defines. ``logits``/``target`` ``(B, 3, D, H, W)``, ``known`` ``(B, 3)`` float."""
    dice = _DICE(logits, target).reshape(logits.shape[0], 3)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(
        dim=(2, 3, 4))
    return ((dice + bce) * known).sum() / known.sum().clamp_min(1)


def train_one_epoch(net: torch.nn.Module, batches: Iterator[Batch], cfg: SegTrainConfig,
                    optimizer: torch.optim.Optimizer, scheduler: Any,
                    device: torch.device, bf16: bool, desc: str) -> float:
    """``cfg.iterations`` optimiser steps on ``batches``; returns the mean loss."""
    net.train()
    losses = []
    for _ in tqdm(range(cfg.iterations), desc=desc, leave=False, disable=None):
        x, y, known = (torch.from_numpy(a).to(device) for a in next(batches))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        loss = region_loss(logits.float(), y, known)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def validate(seg: Segmenter, cases: list[TrainCase]) -> dict[str, Any]:
    """Dice / HD95 per region on whole validation volumes (sliding window)."""
    from mrimaster.segmentation.infer import predict_regions

    seg.net.eval()
    per_case = {}
    for i, case in enumerate(cases):
        vol = case.volume
        assert vol.regions is not None
        pred = predict_regions(seg, vol.image)
        per_case[f"{i}"] = region_scores(pred, vol.regions, vol.known)
    return {"per_case": per_case, "mean": mean_scores(per_case)}


def _load_cases(root: Path, names: list[str], cfg: SegTrainConfig) -> list[TrainCase]:
    return _load(cfg, [find_case(root / n) for n in names])


def _load(cfg: SegTrainConfig, cases: list[Case]) -> list[TrainCase]:
    spacing = (cfg.spacing[0], cfg.spacing[1], cfg.spacing[2])
    return [load_training_case(c, cfg.modalities, cfg.modality_dropout > 0, spacing)
            for c in cases]


def load_init(cfg: SegTrainConfig, settings: Settings) -> tuple[Segmenter, Path]:
    """The model ``cfg.init`` names and its file, checked against the config's network.

    Raises:
        ModelError: its modalities or U-Net widths differ from ``cfg``'s.
    """
    assert cfg.init is not None
    path = resolve_model_path(cfg.init, settings.models_dir, "seg-default")
    init = load_segmenter(path)
    if list(init.modalities) != list(cfg.modalities) or \
            list(init.channels) != list(cfg.channels):
        raise ModelError(
            f"cannot fine-tune {cfg.init}: it takes {'+'.join(init.modalities)} with widths "
            f"{list(init.channels)}, the config asks for {'+'.join(cfg.modalities)} with "
            f"{list(cfg.channels)}",
            "set modalities and channels to the init model's (or omit --config to use the "
            "recipe saved next to it)")
    if tuple(init.spacing) != tuple(cfg.spacing):
        log.warning("init model was trained at %s mm, fine-tuning at %s mm",
                    list(init.spacing), list(cfg.spacing))
    return init, path


def combinations_of(cases: list[TrainCase], modalities: list[str]) -> list[list[str]]:
    """The distinct sets of modalities the training cases have, largest first."""
    sets = {tuple(m for m, p in zip(modalities, c.present, strict=True) if p) for c in cases}
    return [list(s) for s in sorted(sets, key=lambda s: (-len(s), s))]


def run_seg_training(cfg: SegTrainConfig, settings: Settings) -> Path:
    """Train and write the run folder: ``config.yaml``, ``model.pt`` (best mean validation
    Dice), ``history.json``, ``metrics.json``, ``curves.png``. Global random generators are
    seeded by ``cfg.seed`` and given back unchanged afterwards. ``last.pt``, written after
    every epoch and deleted at the end, lets a run interrupted in that folder continue where
    it stopped (:mod:`mrimaster.segmentation.checkpoint`).

    Raises:
        ConfigError: the folder holds the ``last.pt`` of another recipe.
    """
    with seeded(cfg.seed):
        return _run_seg_training(cfg, settings)


def _run_seg_training(cfg: SegTrainConfig, settings: Settings) -> Path:
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ctx = init_distributed(cfg.device)  # torchrun: rank 0 writes, every rank trains
    rng = np.random.default_rng(cfg.seed + ctx.rank)  # each process its own patches
    device = (torch.device("cuda", ctx.local_rank) if ctx.enabled and torch.cuda.is_available()
              and cfg.device != "cpu" else resolve_device(cfg.device))
    root = dataset_dir(cfg.data_dir, settings, "brats-mini")
    reviewed = under_root(Path(cfg.reviewed_dir), settings) if cfg.reviewed_dir else None
    init, init_path = load_init(cfg, settings) if cfg.init is not None else (None, None)
    if init is not None and init.grid != cfg.grid:
        log.warning("fine-tuning keeps the init model's patch grid (%s, on which its "
                    "cross-validation and trust rule were measured), not %s", init.grid,
                    cfg.grid)
        cfg = replace(cfg, grid=init.grid)
    run_dir = Path(cfg.out_dir) if cfg.out_dir else \
        settings.runs_dir / f"seg-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    # no machine paths: the dataset relative to the data root, and no run location
    recipe = replace(cfg, out_dir=None, data_dir=portable(root, settings.data_root),
                     reviewed_dir=portable(reviewed, settings.data_root) if reviewed else None)
    last = load_last(run_dir, ctx, config_to_dict(recipe), config_defaults(SegTrainConfig))
    if ctx.is_main:
        save_config(recipe, run_dir / "config.yaml")
        record = run_record([root] + ([reviewed] if reviewed else []))
        if init_path is not None:
            record["init"] = {"model": str(cfg.init), "sha256": file_sha256(init_path)}
        (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    train = _load_cases(root, cfg.train_cases, cfg)
    if reviewed is not None:
        reviewed_cases = read_reviewed_dataset(reviewed)
        train += _load(cfg, reviewed_cases)
        log.info("fine-tuning data: %d reviewed cases from %s + %d replayed original cases",
                 len(reviewed_cases), reviewed, len(cfg.train_cases))
    val = _load_cases(root, cfg.val_cases, cfg)
    bf16 = use_bf16(cfg.precision, device)
    log.info("segmentation: %d training / %d validation cases, modalities %s, %s", len(train),
             len(val), ", ".join(cfg.modalities), "bf16 autocast" if bf16 else "fp32")
    net = build_unet(len(cfg.modalities), tuple(cfg.channels))
    if init is not None:  # fine-tuning: start from the init model's weights
        net.load_state_dict(init.net.state_dict())
    net = net.to(device)
    lr = cfg.init_lr if init is not None else cfg.lr
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           cfg.epochs * cfg.iterations)
    seg = Segmenter(list(cfg.modalities), (cfg.patch[0], cfg.patch[1], cfg.patch[2]),
                    cfg.modality_dropout > 0, (cfg.spacing[0], cfg.spacing[1], cfg.spacing[2]),
                    combinations_of(train, cfg.modalities), meta={"run": run_dir.name},
                    grid=cfg.grid, net=net, channels=tuple(cfg.channels))
    if init is not None and init_path is not None:
        # the post-processing and exclusions cross-validation chose for it carry over (its
        # patch grid did above)
        seg.postprocess, seg.excluded = dict(init.postprocess), dict(init.excluded)
        seg.combinations = [list(c) for c in init.combinations] + \
            [c for c in seg.combinations if c not in init.combinations]
        seg.meta["init"] = {"model": str(cfg.init), "sha256": file_sha256(init_path)}
    aug = AugmentConfig() if cfg.augment else AugmentConfig(
        p_spatial=0, p_gamma=0, p_brightness=0, p_noise=0, p_lowres=0)
    augmenter = PatchAugmenter(cfg.patch, aug, seed=cfg.seed + ctx.rank)
    history: list[dict[str, Any]] = []
    best, done = -float("inf"), 0
    if last is not None:  # an interrupted run of this recipe: continue after its last epoch
        resume(last, ctx, net=seg.net, optimizer=optimizer, scheduler=scheduler, rng=rng,
               augmenter=augmenter)
        history, best, done, seg.meta = last["history"], last["best"], last["epoch"], last["meta"]
        log.info("resuming from epoch %d/%d (%d done, from last.pt)", done + 1, cfg.epochs, done)
        last = None  # its tensors are loaded: free them
    step_cfg = cfg
    if ctx.enabled:  # every process takes its share of each global batch of patches
        net = wrap(net, ctx)
        step_cfg = replace(cfg, batch_size=per_process_batch(cfg.batch_size, ctx))
    batches = patch_batches(train, step_cfg, augmenter, rng)
    tracker = Tracker(cfg.track and ctx.is_main, settings.tracking_uri, cfg.experiment,
                      run_dir.name)
    tracker.params(config_to_dict(cfg))
    start = time.perf_counter() - (history[-1]["elapsed_s"] if history else 0.0)
    try:
        for epoch in range(done, cfg.epochs):
            loss = train_one_epoch(net, batches, step_cfg, optimizer, scheduler, device, bf16,
                                   f"epoch {epoch + 1}/{cfg.epochs}")
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss,
                                   "elapsed_s": time.perf_counter() - start}
            score: float | None = None
            if val:
                scores = validate(seg, val)["mean"]
                row.update({f"val_dice_{r}": s["dice"] for r, s in scores.items()})
                score = float(np.mean([s["dice"] for s in scores.values()]))
                row["val_score"] = score
            history.append(row)
            # without validation cases the last epoch is kept
            improved = score is None or score > best
            if improved:
                best = best if score is None else score
                seg.meta.update({"epoch": epoch + 1, "val_score": score})
                if ctx.is_main:
                    save_segmenter(run_dir / "model.pt", seg)
            tracker.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            log.info("epoch %d/%d  loss %.4f  %s%s", epoch + 1, cfg.epochs, loss,
                     "  ".join(f"{k[4:]} {v:.3f}" for k, v in row.items()
                               if k.startswith("val_dice")),
                     "  *best*" if improved and score is not None else "")
            if ctx.is_main:
                (run_dir / "history.json").write_text(json.dumps(history, indent=2))
            save_last(run_dir, ctx, net=seg.net, optimizer=optimizer, scheduler=scheduler,
                      epoch=epoch + 1, history=history, best=best, meta=seg.meta,
                      recipe=config_to_dict(recipe), rng=rng, augmenter=augmenter)
        if not ctx.is_main:
            finish(ctx)
            return run_dir
        plot_history(history, run_dir / "curves.png")
        (run_dir / "metrics.json").write_text(json.dumps(
            {"best_epoch": seg.meta.get("epoch"), "best_val_score": best if val else None,
             "last": history[-1]}, indent=2))
        if init_path is not None:
            write_finetune_card(run_dir, cfg, history, init_path, reviewed)
        remove_last(run_dir)  # model.pt + metrics.json mark the run finished
        for name in ("config.yaml", "history.json", "metrics.json", "curves.png", "model.pt"):
            tracker.artifact(run_dir / name)
        tracker.register(run_dir, ["model.pt", "config.yaml", "metrics.json", "run.json",
                                   "history.json"], cfg.registered_model)
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    finish(ctx)
    return run_dir
