"""The Python API for notebooks and scripts: the same stages as the CLI, typed results.

    >>> from mrimaster.api import Classifier, Segmenter
    >>> clf = Classifier.load("default")            # fastest validated runtime
    >>> for p in clf.predict(["slice.jpg"]):
    ...     print(p.status, p.label, p.confidence, p.reason)
    >>> clf.explain(["slice.jpg"], "cams/")         # Grad-CAM overlays (PyTorch)
    >>> Segmenter.load("default").segment("case_dir/", "out/").volumes_ml

The CLI commands ``predict``, ``explain`` and ``seg predict`` are thin shells over the same
functions. Settings (data root, models folder) are read from the environment when an object is
loaded, never at import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrimaster.errors import ConfigError
from mrimaster.inference.loading import load_for_inference
from mrimaster.inference.predict import predict_files
from mrimaster.inference.runtime import ClassifierModel
from mrimaster.segmentation.loading import load_segmenter_for_inference
from mrimaster.segmentation.runtime import SegModel
from mrimaster.settings import Settings, load_settings
from mrimaster.trust.brain_check import load_brain_check

PathLike = str | Path


@dataclass(frozen=True)
class Prediction:
    """One image's result with its trust fields.

    Attributes:
        path: The image file.
        status: ``ok``, ``refer`` (to a radiologist) or ``reject`` (not a brain MRI slice the
            model knows).
        reason: Why it was referred or rejected (empty for ``ok``).
        label: Predicted class (``None`` when rejected: no class is shown).
        confidence: Calibrated probability of ``label`` in [0, 1] (``None`` when rejected).
        uncertainty: In [0, 1), under the model's estimator.
        distance: Feature distance to the training images, per dimension (``None`` without a
            distance check).
        probabilities: Calibrated probability per class (``None`` when rejected).
        brain_mri_p: The brain-MRI check's probability that the image is a brain MRI slice,
            in [0, 1] (``None`` when the check did not run).
    """

    path: str
    status: str
    reason: str
    label: str | None
    confidence: float | None
    uncertainty: float
    distance: float | None
    probabilities: dict[str, float] | None
    brain_mri_p: float | None = None

    @property
    def referred(self) -> bool:
        """Whether a radiologist must look (status is not ``ok``)."""
        return self.status != "ok"

    @classmethod
    def from_row(cls, row: dict[str, Any], classes: Sequence[str]) -> Prediction:
        probs = None if row["prediction"] is None else {c: row[f"p_{c}"] for c in classes}
        return cls(row["path"], row["status"], row["reason"], row["prediction"],
                   row["confidence"], row["uncertainty"], row["distance"], probs,
                   row.get("brain_mri_p"))


def _paths(items: PathLike | Sequence[PathLike]) -> list[Path]:
    """File and folder paths, or a clear error for anything else (an array, a PIL image)."""
    listed: list[Any]
    if isinstance(items, str | bytes | os.PathLike):
        listed = [items]
    else:
        try:
            listed = list(items)
        except TypeError:  # not a sequence at all (a PIL image)
            listed = [items]
    bad = [type(p).__name__ for p in listed if not isinstance(p, str | os.PathLike)]
    if bad:
        raise ConfigError(f"expected file or folder paths, got {', '.join(sorted(set(bad)))}",
                          "save the slice as a file first (PNG, 16-bit PNG or TIFF for raw "
                          "values, or DICOM) and pass its path")
    return [Path(os.fspath(p)) for p in listed]


class Classifier:
    """A brain-MRI slice classifier with its trust rule, in one runtime."""

    def __init__(self, model: ClassifierModel, ref: str, settings: Settings,
                 device: str = "auto") -> None:
        self.model = model
        self.ref = ref
        self.settings = settings
        self.device = device

    @classmethod
    def load(cls, model: str = "default", runtime: str = "auto", device: str = "auto",
             settings: Settings | None = None) -> Classifier:
        """Load ``model`` (``default``, a run or model folder, a ``model.pt``).

        Args:
            runtime: ``auto`` (the fastest validated engine installed), ``torch``, ``onnx`` or
                ``openvino``.
            device: ``auto`` (a CUDA GPU when there is one, with PyTorch), ``cpu`` or ``cuda``.
            settings: Default: read from the environment now.
        """
        settings = settings or load_settings()
        return cls(load_for_inference(model, settings.models_dir, runtime, device,
                                      settings.cache_dir), model,
                   settings, device)

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def runtime(self) -> str:
        """The engine running the network (``torch``, ``openvino-fp32``, ...)."""
        return self.model.runtime.name

    def predict(self, paths: PathLike | Sequence[PathLike], batch_size: int = 64
                ) -> list[Prediction]:
        """Classify image files and folders (searched recursively); files that cannot be
        decoded are left out and logged."""
        rows, _ = predict_files(self.model, _paths(paths), batch_size,
                                brain_check=load_brain_check(self.settings.models_dir))
        return [Prediction.from_row(r, self.model.classes) for r in rows]

    def explain(self, images: PathLike | Sequence[PathLike], out_dir: PathLike,
                layer: str | None = None, method: str = "gradcam") -> list[dict[str, Any]]:
        """Grad-CAM overlays and maps of ``images`` into ``out_dir`` (see
        :func:`mrimaster.explain.explain.run_explain`; always PyTorch, which has gradients)."""
        from mrimaster.explain.explain import ExplainConfig, run_explain

        cfg = ExplainConfig(self.ref, _paths(images), Path(out_dir), layer, method=method,
                            device=self.device)
        return run_explain(cfg, self.settings)


class Segmenter:
    """A 3D tumour segmentation model (WT / TC / ET), in one runtime."""

    def __init__(self, model: SegModel) -> None:
        self.model = model

    @classmethod
    def load(cls, model: str = "default", runtime: str = "auto", device: str = "auto",
             settings: Settings | None = None, fast: bool = False) -> Segmenter:
        """Load ``model`` (``default``, a run or model folder, a ``model.pt``) in ``runtime``
        on ``device``: its fold ensemble where it has one, unless ``fast`` (the final model
        alone)."""
        settings = settings or load_settings()
        return cls(load_segmenter_for_inference(model, settings.models_dir, runtime, device,
                                                fast, settings.check_brain_mri))

    @property
    def runtime(self) -> str:
        return self.model.runtime_name

    def segment(self, case: PathLike, out_dir: PathLike, tta: bool = False) -> Any:
        """Segment the case folder ``case`` into ``out_dir``: ``seg.nii.gz`` (without T1-Gd
        ``wt.nii.gz``, 1 = whole tumour) on the input grid, ``volumes.json``, overlays
        (``tta``: average the 8 mirrorings). Returns a
        :class:`mrimaster.segmentation.infer.SegmentResult` (``volumes_ml``, with ``None`` for
        regions not assessable without T1-Gd; ``plan``: modalities used, missing, ignored;
        ``notes``; ``seg_path``, the mask)."""
        from mrimaster.segmentation.cases import find_case
        from mrimaster.segmentation.infer import segment_case

        return segment_case(self.model, find_case(Path(case)), Path(out_dir), tta)
