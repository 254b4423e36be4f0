"""Train a classifier: config -> run folder (config.yaml, split.csv, model.pt, history, plots).

Reads top to bottom like torchvision's reference script: one epoch of training, evaluation,
data loading, then :func:`run_training` which ties them together.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mrimaster.config import config_to_dict, save_config
from mrimaster.data.labels import CLASSES
from mrimaster.data.splits import SHIFT_PART
from mrimaster.data.transforms import SliceDataset, normalize, train_transform
from mrimaster.device import resolve_device, use_bf16
from mrimaster.errors import ConfigError, DataError
from mrimaster.evaluation.metrics import classification_metrics
from mrimaster.evaluation.plots import plot_curves
from mrimaster.inference.forward import predict_logits
from mrimaster.inference.runtime import softmax
from mrimaster.models.checkpoint import Classifier, load_classifier, save_classifier
from mrimaster.models.registry import build_model
from mrimaster.provenance import portable, run_record
from mrimaster.runs.data_roots import dataset_dir, under_root
from mrimaster.runs.distributed import (
    finish,
    init_distributed,
    per_process_batch,
    sampler,
    unwrap,
    wrap,
)
from mrimaster.runs.tracking import Tracker
from mrimaster.seeding import seeded
from mrimaster.settings import Settings
from mrimaster.training.checks import run_checks
from mrimaster.training.config import TrainConfig
from mrimaster.training.data import SplitData, load_extra_training, load_split_data
from mrimaster.training.fit_trust import CalibrateConfig, run_calibration

log = logging.getLogger(__name__)


def mixed_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float,
               presence_weight: float, no_tumor: int) -> torch.Tensor:
    """Mean over the batch of cross-entropy (labelled images) and the tumour-present loss.

    For an image known only to show a tumour (``y == PRESENT``) the loss is
    ``-log P(tumour) = -log(1 - p_no_tumor) = -(logsumexp(z_tumour) - logsumexp(z))``: it
    pushes probability away from "no tumour" without choosing a tumour type.

    Args:
        logits: ``(B, C)`` float.
        y: ``(B,)`` int64 class index, or :data:`PRESENT`.
    """
    known = y >= 0
    total = logits.new_zeros(())
    if known.any():
        total = total + F.cross_entropy(logits[known], y[known], reduction="sum",
                                        label_smoothing=label_smoothing)
    if (~known).any():
        z = logits[~known]
        tumour = [c for c in range(z.shape[1]) if c != no_tumor]
        log_p_tumour = torch.logsumexp(z[:, tumour], 1) - torch.logsumexp(z, 1)
        total = total - presence_weight * log_p_tumour.sum()
    return total / y.shape[0]


def train_one_epoch(net: nn.Module, loader: torch.utils.data.DataLoader, optimizer:
                    torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    cfg: TrainConfig, desc: str, show: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy and throughput (a presence-only
    image counts as correct when its top class is a tumour; under torchrun, of this
    process's share)."""
    no_tumor = CLASSES.index("no_tumor")
    max_steps = cfg.max_steps_per_epoch
    device = next(net.parameters()).device
    bf16 = use_bf16(cfg.precision, device)
    net.train()
    total_loss, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=None if show else True)
    for step, (x, y) in enumerate(bar):
        if max_steps and step >= max_steps:
            break
        x = normalize(x.to(device)).contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            logits = net(x)
            loss = mixed_loss(logits.float(), y, cfg.label_smoothing, cfg.presence_weight,
                              no_tumor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * y.shape[0]
        pred = logits.argmax(1)
        correct += int(torch.where(y >= 0, pred == y, pred != no_tumor).sum())
        seen += y.shape[0]
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    elapsed = time.perf_counter() - start
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1),
            "images_per_s": seen / max(elapsed, 1e-9)}


def evaluate(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Loss and classification metrics on preprocessed slices (no augmentation)."""
    logits = predict_logits(net, images)
    metrics = classification_metrics(labels, softmax(logits), CLASSES)
    metrics["loss"] = metrics["nll"]
    return metrics


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Any:
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _run_dir(cfg: TrainConfig, settings: Settings) -> Path:
    if cfg.resume:
        return Path(cfg.resume)
    if cfg.out_dir:
        return Path(cfg.out_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.runs_dir / f"{cfg.model}-{stamp}"


EpochHook = Callable[[int, dict[str, Any]], None]
"""Called after each epoch with its number and history row (a sweep reports the validation
score and may raise ``optuna.TrialPruned`` to stop the run)."""


def run_training(cfg: TrainConfig, settings: Settings, on_epoch: EpochHook | None = None
                 ) -> Path:
    """Train a classifier into a run folder (see :func:`_run_training`), with every global
    random generator seeded by ``cfg.seed`` and given back unchanged afterwards. A recipe
    with ``members`` trains a deep ensemble instead
    (:func:`mrimaster.training.ensemble.run_ensemble_training`)."""
    if cfg.members:
        from mrimaster.training.ensemble import run_ensemble_training

        return run_ensemble_training(cfg, settings)
    with seeded(cfg.seed):
        return _run_training(cfg, settings, on_epoch)


def _run_training(cfg: TrainConfig, settings: Settings, on_epoch: EpochHook | None = None
                  ) -> Path:
    """Train ``cfg.model`` and write the run folder.

    Run folder contents: ``config.yaml`` (resolved), ``split.csv``, ``history.json`` (per-epoch
    metrics), ``model.pt`` (best validation macro F1), ``last.pt`` (for ``resume``),
    ``curves.png``, ``metrics.json`` (validation and held-out test metrics of the best model).

    Returns:
        The run folder.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ctx = init_distributed(cfg.device)  # torchrun: rank 0 writes, every rank trains
    data_dir = dataset_dir(cfg.data_dir, settings)
    run_dir = _run_dir(cfg, settings)
    if cfg.resume and not (run_dir / "last.pt").is_file():
        raise ConfigError(f"cannot resume: {run_dir / 'last.pt'} not found")
    run_dir.mkdir(parents=True, exist_ok=True)
    data, (x_train, y_train), (x_val, y_val) = _prepare_run(cfg, settings, run_dir, data_dir,
                                                            write=ctx.is_main)

    net = build_model(cfg.model, len(CLASSES), cfg.pretrained, cfg.image_size)
    for name, param in net.named_parameters():
        if any(name.startswith(prefix) for prefix in cfg.freeze):
            param.requires_grad = False
    device = (torch.device("cuda", ctx.local_rank) if ctx.enabled and torch.cuda.is_available()
              and cfg.device != "cpu" else resolve_device(cfg.device))
    net = net.to(device).to(memory_format=torch.channels_last)
    log.info("training on %s in %s", device, "bf16 autocast" if use_bf16(cfg.precision, device)
             else "fp32")
    generator = torch.Generator().manual_seed(cfg.seed)
    train_set = SliceDataset(x_train, y_train, train_transform(cfg.augment, cfg.image_size))
    drop_last = len(y_train) > cfg.batch_size
    if ctx.enabled:  # each process takes its share of every global batch
        share = sampler(train_set, ctx, cfg.seed, drop_last)
        loader = torch.utils.data.DataLoader(train_set, per_process_batch(cfg.batch_size, ctx),
                                             sampler=share, drop_last=drop_last)
    else:
        loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                             drop_last=drop_last, generator=generator)
    steps = len(loader) if not cfg.max_steps_per_epoch else min(len(loader),
                                                                cfg.max_steps_per_epoch)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps))

    history: list[dict[str, Any]] = []
    best_f1, start_epoch = -1.0, 0
    if cfg.resume:
        state = torch.load(run_dir / "last.pt", map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())
        generator.set_state(state["generator"])
        history, best_f1, start_epoch = state["history"], state["best_f1"], state["epoch"] + 1
        log.info("resumed from epoch %d", start_epoch)

    if ctx.enabled:
        net = wrap(net, ctx)
    tracker = Tracker(cfg.track and ctx.is_main, settings.tracking_uri, cfg.experiment,
                      run_dir.name)
    clock = time.perf_counter() - (history[-1].get("elapsed_s", 0.0) if history else 0.0)
    tracker.params(config_to_dict(cfg))
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if ctx.enabled:
                loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            train_stats = train_one_epoch(net, loader, optimizer, scheduler, cfg,
                                          f"epoch {epoch + 1}/{cfg.epochs}", ctx.is_main)
            val = evaluate(unwrap(net), x_val, y_val)  # every rank: the same decisions
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": train_stats["loss"], "train_accuracy": train_stats["accuracy"],
                   "train_images_per_s": train_stats["images_per_s"], "val_loss": val["loss"],
                   "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                   "elapsed_s": time.perf_counter() - clock}
            history.append(row)
            improved = val["macro_f1"] > best_f1
            if improved:
                best_f1 = val["macro_f1"]
            if improved and ctx.is_main:
                save_classifier(run_dir / "model.pt", Classifier(
                    cfg.model, list(CLASSES), cfg.image_size, net=unwrap(net),
                    meta={"run": run_dir.name, "epoch": epoch + 1,
                          "data_dir": str(portable(data_dir, settings.data_root)),
                          "val_macro_f1": best_f1}))
            log.info("epoch %d/%d  train loss %.4f acc %.3f (%.0f img/s)  val loss %.4f acc "
                     "%.3f macro-F1 %.3f%s", epoch + 1, cfg.epochs, row["train_loss"],
                     row["train_accuracy"], row["train_images_per_s"], row["val_loss"],
                     row["val_accuracy"], row["val_macro_f1"], "  *best*" if improved else "")
            tracker.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            if ctx.is_main:
                torch.save({"net": unwrap(net).state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                            "generator": generator.get_state(), "history": history,
                            "best_f1": best_f1, "epoch": epoch}, run_dir / "last.pt")
                (run_dir / "history.json").write_text(json.dumps(history, indent=2))
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            best_epoch = max(history, key=lambda r: r["val_macro_f1"])["epoch"]
            stale = len(history) - best_epoch
            if cfg.patience and stale >= cfg.patience:
                log.info("early stopping: no better validation macro F1 for %d epochs", stale)
                break
        if not ctx.is_main:
            finish(ctx)
            return run_dir
        if cfg.calibrate:
            run_calibration(CalibrateConfig(str(run_dir), data_dir, run_dir / "split.csv"),
                            settings)
            run_checks(run_dir, settings)
        _log_results(tracker, cfg, run_dir, _finish(run_dir, data, history))
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close()
    finish(ctx)
    return run_dir


def _prepare_run(cfg: TrainConfig, settings: Settings, run_dir: Path, data_dir: Path,
                 write: bool = True) -> tuple[SplitData, tuple[np.ndarray, np.ndarray],
                                             tuple[np.ndarray, np.ndarray]]:
    """Load the split and the data; write (``write``: rank 0 of a distributed run) ``split.csv``,
    ``config.yaml``, ``run.json`` and ``extra_training.json``.

    Returns:
        ``(split data, (train images, labels) with the extra sources, (val images, labels))``.
    """
    # a resumed run keeps its own split; its config.yaml records the run as it was configured
    # (with the overrides given now), not the machine path it was resumed from
    split_cfg = replace(cfg, split_file=run_dir / "split.csv") if cfg.resume else cfg
    data = load_split_data(split_cfg, data_dir)
    extra = [under_root(Path(d), settings) for d in (cfg.brats_dir, cfg.presence_dir) if d]
    if write:
        if not cfg.resume:
            data.table.save(run_dir / "split.csv")
        # no machine paths: the dataset relative to the data root, and no run location
        save_config(replace(cfg, resume=None, out_dir=None,
                            data_dir=portable(data_dir, settings.data_root)),
                    run_dir / "config.yaml")
        (run_dir / "run.json").write_text(json.dumps(run_record([data_dir, *extra]), indent=2))
    x_train, y_train = data.part("train")
    x_val, y_val = data.part("val")
    if len(y_train) == 0 or len(y_val) == 0:
        raise DataError("the split left the training or validation part empty",
                        "use more images or other split_fractions")
    log.info("data: %d train / %d val / %d test / %d source-held-out images from %s (%d "
             "skipped)", len(y_train), len(y_val), len(data.table.indices("test")),
             len(data.table.indices(SHIFT_PART)), data_dir, len(data.slices.skipped))
    x_extra, y_extra, extra_counts = load_extra_training(cfg, settings)
    if extra_counts:
        log.info("extra training images: %s", extra_counts)
        if write:
            (run_dir / "extra_training.json").write_text(json.dumps(extra_counts, indent=2))
        x_train = np.concatenate([x_train, x_extra])
        y_train = np.concatenate([y_train, y_extra])
    return data, (x_train, y_train), (x_val, y_val)


def _log_results(tracker: Tracker, cfg: TrainConfig, run_dir: Path,
                 summary: dict[str, Any]) -> None:
    """Final metrics, the run's files and (when tracking) the model, to MLflow."""
    tracker.metrics({f"final_{k}": v for k, v in summary.items() if isinstance(v, float)})
    for name in ("config.yaml", "run.json", "split.csv", "history.json", "metrics.json",
                 "curves.png", "model.pt", "calibration.json", "checks.json"):
        if (run_dir / name).is_file():
            tracker.artifact(run_dir / name)
    if cfg.track:
        tracker.model(load_classifier(run_dir / "model.pt").net,
                      np.zeros((1, 3, cfg.image_size, cfg.image_size), np.float32))
        if cfg.registered_model:
            from mrimaster.training.export import model_card

            (run_dir / "MODEL_CARD.md").write_text(model_card(
                run_dir, f"mrimaster train (run {run_dir.name}), registered as "
                f"{cfg.registered_model}"))
            tracker.register(run_dir, ["model.pt", "MODEL_CARD.md", "config.yaml", "split.csv",
                                       "calibration.json", "checks.json", "metrics.json",
                                       "run.json"], cfg.registered_model)


def _finish(run_dir: Path, data: SplitData, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate the best model on validation and the held-out test split; plot the curves.

    (The trust figures of the calibrated model are in ``checks.json``, see
    :mod:`mrimaster.training.checks`.)
    """
    clf = load_classifier(run_dir / "model.pt")
    summary: dict[str, Any] = {"best_epoch": clf.meta.get("epoch")}
    results = {}
    for part in ("val", "test"):
        images, labels = data.part(part)
        if len(labels):
            results[part] = evaluate(clf.net, images, labels)
            summary[f"{part}_macro_f1"] = results[part]["macro_f1"]
            summary[f"{part}_accuracy"] = results[part]["accuracy"]
    (run_dir / "metrics.json").write_text(json.dumps({"summary": summary, **results}, indent=2))
    plot_curves(history, run_dir / "curves.png")
    log.info("best epoch %s: %s", summary["best_epoch"],
             ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float)))
    return summary
