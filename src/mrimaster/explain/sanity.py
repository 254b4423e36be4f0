"""Model-randomisation sanity check for saliency maps (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018, Sec. 3.1).

If a map explains what the network learned, re-initialising the trained weights must change it.
The check compares maps of the trained and of a randomly re-initialised copy of the network by
Spearman rank correlation per image: values near 1 would mean the map ignores the weights
(it behaves like an edge detector); near 0, it depends on them.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from torch import nn

from mrimaster.data.transforms import eval_batch
from mrimaster.explain.cam import get_cam
from mrimaster.seeding import seeded


def randomize_weights(net: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``net`` with every layer re-initialised (``reset_parameters``)."""
    clone = copy.deepcopy(net)
    with seeded(seed):
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    return clone.eval()


def randomization_check(net: nn.Module, images: np.ndarray, layer: str | None = None,
                        method: str = "gradcam", seed: int = 0) -> dict[str, Any]:
    """Spearman correlation between maps of the trained and the randomised network.

    Args:
        net: Trained classifier.
        images: ``(N, S, S)`` uint8 preprocessed slices.
        layer: Convolutional layer (default: the last).
        method: ``gradcam`` or ``gradcam++``.

    Returns:
        ``{"layer", "method", "spearman": [per image], "mean_spearman"}``; the class explained is
        the trained network's prediction, for both networks.
    """
    x = eval_batch(images)
    cam_cls = get_cam(method)
    with cam_cls(net, layer) as cam:
        trained = cam(x)
    random_net = randomize_weights(net, seed)
    with cam_cls(random_net, layer) as cam:
        randomized = cam(x, [int(c) for c in trained.classes])
    rhos = []
    for a, b in zip(trained.upsampled, randomized.upsampled, strict=True):
        rho = spearmanr(a.ravel(), b.ravel()).statistic
        rhos.append(float(0.0 if np.isnan(rho) else rho))
    return {"layer": layer or "last conv", "method": method, "spearman": rhos,
            "mean_spearman": float(np.mean(rhos))}
