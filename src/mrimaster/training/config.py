"""The classification training config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mrimaster.data.hashing import DEFAULT_THRESHOLD
from mrimaster.errors import ConfigError
from mrimaster.models.registry import get_spec


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run folder.

    Attributes:
        model: Registered model name (``mrimaster models`` lists them).
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
        augment: ``mri`` (crop, flip, rotation, intensity), ``seed`` (flip, rotation) or ``none``.
        freeze: Parameter-name prefixes to keep frozen (e.g. ``_blocks.0.``).
        patience: Stop after this many epochs without a better validation macro F1 (0: never).
        seed: Seed of the split, initialisation, augmentation and batch order.
        split_fractions: Train / validation / test shares.
        split_file: Reuse a saved ``split.csv`` instead of computing one.
        dedup_threshold: Near-duplicate Hamming threshold (bits of 256).
        num_threads: Torch CPU threads (0: torch's default).
        device: ``auto`` (a CUDA GPU when there is one), ``cpu`` or ``cuda``.
        max_steps_per_epoch: Cap on steps per epoch (0: no cap; for smoke tests).
        out_dir: Run folder (default ``<runs dir>/<model>-<timestamp>``).
        resume: A run folder whose ``last.pt`` to continue from.
        calibrate: Fit temperature scaling and the referral rule on validation afterwards.
        track: Log to MLflow.
        experiment: MLflow experiment name.
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
    num_threads: int = 0
    device: str = "auto"
    max_steps_per_epoch: int = 0
    out_dir: Path | None = None
    resume: Path | None = None
    calibrate: bool = True
    track: bool = True
    experiment: str = "mrimaster-classification"

    def __post_init__(self) -> None:
        spec = get_spec(self.model)
        if self.image_size == 0:
            self.image_size = spec.image_size
        if self.pretrained and not spec.pretrainable:
            raise ConfigError(f"model {self.model!r} has no pretrained weights",
                              "add pretrained=false")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule {self.schedule!r} is not one of: cosine, constant")
        if self.augment not in ("mri", "seed", "none"):
            raise ConfigError(f"augment {self.augment!r} is not one of: mri, seed, none")
        if self.epochs < 1 or self.batch_size < 1 or self.image_size < 32:
            raise ConfigError("epochs and batch_size must be >= 1 and image_size >= 32")
        if len(self.split_fractions) != 3:
            raise ConfigError("split_fractions needs three numbers: train, val, test")
