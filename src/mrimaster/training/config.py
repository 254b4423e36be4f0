"""The classification training config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrimaster.data.hashing import DEFAULT_THRESHOLD
from mrimaster.data.transforms import AUGMENT_PRESETS
from mrimaster.errors import ConfigError
from mrimaster.models.registry import get_spec


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run folder.

    Attributes:
        model: Registered model name (``mrimaster models list`` lists them).
        pretrained: Start from ImageNet weights.
        data_dir: Class-per-folder dataset; default ``<data root>/sartaj-training``.
        image_size: Input side in pixels (0: the model's default).
        epochs: Maximum number of epochs.
        batch_size: Images per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up before the cosine decay (``schedule: cosine``).
        schedule: ``cosine`` or ``constant``.
        label_smoothing: Cross-entropy label smoothing.
        augment: ``shift`` (``mri`` plus intensity curves, resolution, noise, JPEG),
            ``shift-contrast`` (``shift`` plus a curve that may reverse tissue contrast), ``mri``
            (crop, flip, rotation, intensity), ``seed`` (flip, rotation) or ``none``.
        freeze: Parameter-name prefixes to keep frozen (e.g. ``_blocks.0.``).
        patience: Stop after this many epochs without a better validation macro F1 (0: never).
        seed: Seed of the split, initialisation, augmentation and batch order.
        split_fractions: Train / validation / test shares.
        split_file: A split made by ``mrimaster data split`` (or a run's ``split.csv``); without
            one, the split is computed the same way for this run.
        dedup_threshold: Near-duplicate Hamming threshold (bits of 256) when computing a split.
        presence_dir: Presence-only tumour images (e.g. ``br35h-tumour``; relative paths are
            under the data root) whose ``fit`` part trains P(tumour) = 1 - P(no_tumor).
        presence_split: Split of ``presence_dir`` (``mrimaster data split``); only its ``fit``
            part is used, ``report`` never is.
        presence_weight: Weight of the tumour-present loss ``-log(1 - p_no_tumor)``.
        brats_dir: BraTS cases (relative: under the data root) cut into glioma and no-tumour
            axial slices (:mod:`mrimaster.data.brats_slices`), added to training.
        brats_slices_per_case: Tumour slices per case and modality (half as many tumour-free).
        num_threads: Torch CPU threads (0: torch's default).
        device: ``auto`` (a CUDA GPU when there is one), ``cpu`` or ``cuda``.
        max_steps_per_epoch: Cap on steps per epoch (0: no cap; for smoke tests).
        out_dir: Run folder (default ``<runs dir>/<model>-<timestamp>``).
        resume: A run folder whose ``last.pt`` to continue from.
        calibrate: Fit temperature scaling and the referral rule on validation afterwards.
        track: Log to MLflow.
        experiment: MLflow experiment name.
        registered_model: Name the model is registered under in the MLflow model registry
            (when tracking; empty: not registered).
        members: A deep ensemble: one mapping of overrides per member (e.g. ``{seed: 1,
            augment: shift-contrast}``); each member is trained as this recipe with its
            overrides into ``out_dir/members/K`` (:mod:`mrimaster.training.ensemble`). Empty:
            a single model.
        precision: ``fp32``, ``bf16`` (autocast of the forward pass and loss) or ``auto``
            (bf16 on CUDA and on CPUs with AVX512-BF16 or AMX).
    """

    model: str = "efficientnet-lite0"
    pretrained: bool = True
    data_dir: Path | None = None
    image_size: int = 0
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    augment: str = "mri"
    freeze: list[str] = field(default_factory=list)
    patience: int = 5
    seed: int = 0
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    split_file: Path | None = None
    dedup_threshold: int = DEFAULT_THRESHOLD
    presence_dir: Path | None = None
    presence_split: Path | None = None
    presence_weight: float = 1.0
    brats_dir: Path | None = None
    brats_slices_per_case: int = 8
    num_threads: int = 0
    device: str = "auto"
    max_steps_per_epoch: int = 0
    out_dir: Path | None = None
    resume: Path | None = None
    calibrate: bool = True
    track: bool = True
    experiment: str = "mrimaster-classification"
    registered_model: str = "mrimaster-classifier"
    precision: str = "fp32"
    members: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        spec = get_spec(self.model)
        if self.image_size == 0:
            self.image_size = spec.image_size
        if self.pretrained and not spec.pretrainable:
            raise ConfigError(f"model {self.model!r} has no pretrained weights",
                              "add pretrained=false")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision {self.precision!r} unknown", "use auto, fp32 or bf16")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule {self.schedule!r} is not one of: cosine, constant")
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"augment {self.augment!r} is not one of: "
                              f"{', '.join(AUGMENT_PRESETS)}")
        if self.presence_dir is not None and self.presence_split is None:
            raise ConfigError("presence_dir needs presence_split (its fit/report parts)",
                              "make one with `mrimaster data split DIR --out FILE`")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 32:
            raise ConfigError("epochs and batch_size must be >= 1 and image_size >= 32")
        if len(self.split_fractions) != 3:
            raise ConfigError("split_fractions needs three numbers: train, val, test")
