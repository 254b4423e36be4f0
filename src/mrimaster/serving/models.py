"""The models the web app serves, loaded once at start-up and kept."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.api import Classifier, Segmenter
from mrimaster.models.paths import file_sha256, resolve_model_path
from mrimaster.settings import Settings


def model_version(ref: str, models_dir: Path, default: str = "default") -> str:
    """``<name>@<first 12 hex digits of the model file's SHA-256>``: names the exact weights
    (``default`` resolves to the shipped model folder ``default``)."""
    path = resolve_model_path(ref, models_dir, default)
    name = default if ref == "default" else ref
    return f"{name}@{file_sha256(path)[:12]}"


@dataclass
class CamLayer:
    """A layer offered in the page's layer selector."""

    name: str
    label: str


@dataclass
class ServedModels:
    """The classifier (fastest validated runtime), its PyTorch twin for Grad-CAM (loaded on
    first use: gradients need PyTorch) and the segmenter (loaded on first use).

    Attributes:
        classifier: For predictions with every trust field.
        version: :func:`model_version` of the classifier.
        settings: Project settings.
        seg_ref: Segmenter reference.
    """

    classifier: Classifier
    version: str
    settings: Settings
    seg_ref: str = "default"
    _cam: Any = None
    _layers: list[CamLayer] = field(default_factory=list)
    _seg: Segmenter | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, settings: Settings, ref: str = "default", seg_ref: str = "default"
             ) -> ServedModels:
        clf = Classifier.load(ref, settings=settings)
        return cls(clf, model_version(ref, settings.models_dir), settings, seg_ref)

    def cam_model(self) -> tuple[Any, list[CamLayer]]:
        """The PyTorch classifier and the layers shown (one per resolution stage, shallow to
        deep, the default explained layer last)."""
        with self._lock:
            if self._cam is None:
                from mrimaster.models.checkpoint import load_classifier

                clf = load_classifier(resolve_model_path(self.classifier.ref,
                                                         self.settings.models_dir), "cpu")
                self._layers = stage_layers(clf.net, clf.image_size)
                self._cam = clf
            return self._cam, self._layers

    def seg_version(self) -> str:
        """:func:`model_version` of the segmenter."""
        return model_version(self.seg_ref, self.settings.models_dir, "seg-default")

    def segmenter(self) -> Segmenter:
        with self._lock:
            if self._seg is None:
                self._seg = Segmenter.load(self.seg_ref, settings=self.settings)
            return self._seg


def stage_layers(net: Any, size: int, stages: int = 4) -> list[CamLayer]:
    """The last convolution of each of the deepest ``stages`` output resolutions, then the
    network's default Grad-CAM layer: a short, readable path through the network."""
    import torch

    from mrimaster.explain.cam import conv_layers, default_layer

    sizes: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, o.shape[-1]))
             for n, m in conv_layers(net).items()]
    try:
        with torch.no_grad():
            net.eval()
            net(torch.from_numpy(np.zeros((1, 3, size, size), np.float32)))
    finally:
        for h in hooks:
            h.remove()
    last_at: dict[int, str] = {}
    for name, px in sizes.items():  # forward order: the last conv seen at each resolution
        last_at[px] = name
    chosen = [CamLayer(last_at[px], f"{px}x{px} stage ({last_at[px]})")
              for px in sorted(last_at, reverse=True)][-stages:]
    default = default_layer(net)
    chosen = [c for c in chosen if c.name != default]
    chosen.append(CamLayer(default, f"final features ({default}, default)"))
    return chosen
