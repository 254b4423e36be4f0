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
    """A layer offered in the page's layer selector.

    Attributes:
        name: The module's qualified name.
        label: What the selector shows.
        method: ``cam`` where the layer is pooled straight into the linear head (its Grad-CAM
            is CAM, from the forward pass alone: :mod:`mrimaster.explain.forward_cam`), else
            ``gradcam`` (a backward pass).
    """

    name: str
    label: str
    method: str = "gradcam"


@dataclass
class ServedModels:
    """The classifier (fastest validated runtime), its PyTorch twin for the heatmaps (loaded on
    first use: the feature maps and gradients come from PyTorch) and the segmenter (loaded on
    first use).

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
    network's default Grad-CAM layer: a short, readable path through the network. The default
    layer's method is ``cam`` when the network pools it straight into its linear head (checked
    on this pass, and again on every pass by :class:`mrimaster.explain.forward_cam.ForwardCAM`).
    """
    import torch

    from mrimaster.errors import MRIMasterError
    from mrimaster.explain.cam import conv_layers, default_layer
    from mrimaster.explain.forward_cam import ForwardCAM

    sizes: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, o.shape[-1]))
             for n, m in conv_layers(net).items()]
    default = default_layer(net)
    forward_cam = ForwardCAM(net, default)
    try:
        with torch.no_grad(), forward_cam:
            net.eval()
            # a fixed, non-constant probe: on a constant image the check could hold by chance
            probe = np.random.default_rng(0).standard_normal((1, 3, size, size))
            logits = net(torch.from_numpy(probe.astype(np.float32)))
    finally:
        for h in hooks:
            h.remove()
    try:
        forward_cam.result((size, size), logits.float().numpy())
        method = "cam"
    except MRIMasterError:  # not pooled straight into the head: gradients needed
        method = "gradcam"
    last_at: dict[int, str] = {}
    for name, px in sizes.items():  # forward order: the last conv seen at each resolution
        last_at[px] = name
    chosen = [CamLayer(last_at[px], f"{px}x{px} stage ({last_at[px]})")
              for px in sorted(last_at, reverse=True)][-stages:]
    chosen = [c for c in chosen if c.name != default]
    chosen.append(CamLayer(default, f"final features ({default}, default)", method))
    return chosen
