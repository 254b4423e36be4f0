"""Train the brain-MRI check (:mod:`mrimaster.trust.brain_check`): data, training, threshold.

One stage, :func:`run_train_brain_check`: config -> run folder with ``config.yaml``, the model
(``weights.npz``, ``model.onnx``, ``brain_check.json``), ``metrics.json``, ``examples.png`` and
``MODEL_CARD.md``; ``mrimaster train-brain-check`` calls it.

Data (:mod:`mrimaster.training.brain_check_data`), each image prepared as the classifier
prepares it (crop to the head, pad, resize to 192 px), then cut to the check's thumbnail:

* positives, real brain MRI, in three parts: ``train``, ``calib`` (chooses the threshold) and
  ``report`` (only measured). ``sartaj-training`` follows the project's split file
  (near-duplicates never cross parts): ``train`` -> train, ``val`` -> calib, ``test`` and
  ``shift`` -> report. ``br35h-tumour``: its ``report`` half -> report, its ``fit`` half split by
  near-duplicate group between train and calib. ``brats-mini``: whole cases (patients) per
  part, axial, coronal and sagittal slices through the brain of every modality. Report only,
  never trained on: matplotlib's MRI head slice and the pydeface mean head (scalp and face kept).
* negatives (:mod:`mrimaster.data.non_mri`): the training kinds (``train`` with one seed;
  ``calib`` with another, to measure seen kinds on new images) and the held-out kinds
  (``report`` only, never trained on).

The threshold: the ``mri_reject_target`` quantile of the calib MRI's probabilities, and at most
0.5 (see :func:`choose_threshold`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mrimaster.data.images import prepare_slice
from mrimaster.errors import DataError
from mrimaster.training.brain_check_data import (
    PREPARED_SIZE,
    SHARED_SOURCES,
    BrainCheckConfig,
    Examples,
    load_negatives,
    load_positives,
)
from mrimaster.trust.brain_check import CHANNELS, ONNX, BrainCheck, onnx_session

log = logging.getLogger(__name__)


def build_net() -> Any:
    """The PyTorch twin of :func:`mrimaster.trust.brain_check.forward` (with batch norm)."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            c_in = 1
            for i, c in enumerate(CHANNELS):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU()]
                if i < len(CHANNELS) - 1:
                    layers.append(nn.MaxPool2d(2))
                c_in = c
            self.body = nn.Sequential(*layers)
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(2 * c_in, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.body(x)
            pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
            return self.fc(self.drop(pooled))[:, 0]

    return Net()


def fold_weights(net: Any) -> dict[str, np.ndarray]:
    """Batch norm folded into the preceding convolution: the arrays of ``weights.npz``."""
    convs = [m for m in net.body if m.__class__.__name__ == "Conv2d"]
    norms = [m for m in net.body if m.__class__.__name__ == "BatchNorm2d"]
    out: dict[str, np.ndarray] = {}
    for i, (conv, bn) in enumerate(zip(convs, norms, strict=True)):
        scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
        out[f"conv{i}_w"] = conv.weight.detach().numpy() * scale[:, None, None, None]
        out[f"conv{i}_b"] = (bn.bias.detach().numpy() - bn.running_mean.detach().numpy() * scale)
    out["fc_w"] = net.fc.weight.detach().numpy()
    out["fc_b"] = net.fc.bias.detach().numpy()
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def export_onnx(weights: dict[str, np.ndarray], path: Path) -> None:
    """Write the folded network (``weights.npz``'s arrays, no batch norm) as ONNX: input
    ``x`` ``(N, 64, 64, 1)`` float32 from :func:`~mrimaster.trust.brain_check.to_input`,
    output ``logit`` ``(N,)``; the same function as :func:`~mrimaster.trust.brain_check.forward`.
    """
    import warnings

    import torch
    from torch import nn

    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList()
            for i in range(len(CHANNELS)):
                w = torch.from_numpy(weights[f"conv{i}_w"])
                conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
                conv.weight = nn.Parameter(w)
                conv.bias = nn.Parameter(torch.from_numpy(weights[f"conv{i}_b"]))
                self.convs.append(conv)
            self.fc = nn.Linear(weights["fc_w"].shape[1], 1)
            self.fc.weight = nn.Parameter(torch.from_numpy(weights["fc_w"]))
            self.fc.bias = nn.Parameter(torch.from_numpy(weights["fc_b"]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = x.permute(0, 3, 1, 2)
            for i, conv in enumerate(self.convs):
                f = torch.relu(conv(f))
                if i < len(self.convs) - 1:
                    f = nn.functional.max_pool2d(f, 2)
            return self.fc(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))[:, 0]

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(Folded().eval(), (torch.zeros(2, 64, 64, 1),), str(path),
                          opset_version=18, input_names=["x"], output_names=["logit"],
                          dynamic_axes={"x": {0: "batch"}, "logit": {0: "batch"}},
                          dynamo=False)


def _augment(x: Any, gen: Any) -> Any:
    """Same flips and 90-degree turn for the batch; per image gamma, contrast and noise.
    ``x``: ``(B, 1, 64, 64)`` float32 in [0, 1]."""
    import torch

    if torch.rand(1, generator=gen).item() < 0.5:
        x = x.flip(3)
    if torch.rand(1, generator=gen).item() < 0.5:  # upside down: headers that lie
        x = x.flip(2)
    x = torch.rot90(x, int(torch.randint(4, (1,), generator=gen).item()), (2, 3))
    b = x.shape[0]
    gamma = torch.exp(torch.empty(b, 1, 1, 1).uniform_(-0.4, 0.4, generator=gen))
    gain = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.2, generator=gen)
    noise = torch.randn(x.shape, generator=gen) * torch.empty(b, 1, 1, 1).uniform_(
        0, 0.03, generator=gen)
    return (x.clamp(0, 1) ** gamma * gain + noise).clamp(0, 1)


def train_net(x: np.ndarray, y: np.ndarray, cfg: BrainCheckConfig) -> dict[str, np.ndarray]:
    """Train on thumbnails ``x`` ``(N, 64, 64)`` uint8 with labels ``y`` ``(N,)`` (1: MRI);
    classes weighted to balance. Returns the folded weights."""
    import torch

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = build_net()
    data = torch.from_numpy(x.astype(np.float32) / 255)[:, None]
    target = torch.from_numpy(y.astype(np.float32))
    pos_weight = torch.tensor(float((y == 0).sum()) / max(int((y == 1).sum()), 1))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(steps, 1))
    net.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            xb = (_augment(data[idx], gen) - 0.5) * 4.0  # as trust.brain_check.to_input
            loss = loss_fn(net(xb), target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log.info("epoch %d/%d: loss %.4f", epoch + 1, cfg.epochs, total / len(x))
    net.eval()
    return fold_weights(net)


def choose_threshold(mri_p: np.ndarray, target: float, ceiling: float = 0.5) -> float:
    """The largest threshold that rejects at most ``target`` of ``mri_p`` (calib MRI), and at
    most ``ceiling``: ``min(ceiling, q)`` with ``q`` the lower ``target`` quantile.

    Args:
        mri_p: ``(N,)`` probabilities of real MRI slices held out of training.
        target: Share of them that may be rejected (``p < threshold``), in [0, 1).
    """
    if len(mri_p) == 0:
        raise DataError("no calibration MRI to choose the brain-MRI check's threshold on")
    q = float(np.quantile(np.asarray(mri_p, np.float64), target, method="lower"))
    return float(min(ceiling, max(q, 1e-6)))


def rates(check: BrainCheck, p: np.ndarray, ex: Examples, part: str) -> dict[str, Any]:
    """Reject rate per source of one part: ``{source: {"n", "rejected", "rate"}}``."""
    out: dict[str, Any] = {}
    for source in sorted({s for s, q in zip(ex.sources, ex.parts, strict=True) if q == part}):
        idx = ex.where(part, source)
        bad = int(check.rejects(p[idx]).sum())
        out[source] = {"n": int(len(idx)), "rejected": bad, "rate": bad / len(idx)}
    return out


def ms_per_image(check: BrainCheck, images: np.ndarray, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds per image, one at a time and in a batch of 64, in the check's
    runtime (``images``: prepared slices at the classifier's size, thumbnailing included)."""
    def median(batch: np.ndarray) -> float:
        check.score(batch)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            check.score(batch)
            times.append((time.perf_counter() - t0) / len(batch))
        return 1000 * float(np.median(times))

    return {"single": median(images[:1]), "batch64": median(images[:64])}


def run_train_brain_check(cfg: BrainCheckConfig, data_root: Path, out: Path,
                          command: str = "") -> dict[str, Any]:
    """Train, choose the threshold, measure, and write the model folder ``out``.

    Returns:
        The metrics (also ``out/metrics.json``).
    """
    from mrimaster.training.brain_check_report import write_card, write_examples

    t0 = time.perf_counter()
    pos, neg = load_positives(data_root, cfg), load_negatives(cfg)
    t_data = time.perf_counter() - t0
    ptr, ntr = pos.where("train"), neg.where("train")
    x = np.concatenate([pos.images[ptr], neg.images[ntr]])
    y = np.concatenate([np.ones(len(ptr)), np.zeros(len(ntr))])
    weights = train_net(x, y, cfg)
    t_train = time.perf_counter() - t0 - t_data
    check = BrainCheck(weights, 0.5)
    p_pos, p_neg = check.score(pos.images), check.score(neg.images)
    check.threshold = choose_threshold(p_pos[pos.where("calib")], cfg.mri_reject_target,
                                       cfg.max_threshold)
    held = neg.where("report")
    mri = pos.where("report")
    shared = np.concatenate([pos.where("report", s) for s in SHARED_SOURCES])
    metrics: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d"),
        "threshold": check.threshold,
        "held_out_reject_rate": float(check.rejects(p_neg[held]).mean()) if len(held) else None,
        "held_out_reject_per_kind": rates(check, p_neg, neg, "report"),
        "seen_kinds_reject_per_kind_new_images": rates(check, p_neg, neg, "calib"),
        "mri_reject_rate_report": float(check.rejects(p_pos[mri]).mean()) if len(mri) else None,
        "mri_reject_rate_report_shared_sets": float(check.rejects(p_pos[shared]).mean()),
        "mri_reject_per_source_report": rates(check, p_pos, pos, "report"),
        "mri_reject_per_source_calib": rates(check, p_pos, pos, "calib"),
        "mri_reject_per_source_train": rates(check, p_pos, pos, "train"),
        "counts": {"train_mri": int(len(ptr)), "train_non_mri": int(len(ntr))},
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(weights, out / ONNX)
    sample = np.stack([prepare_slice(im, PREPARED_SIZE) for im in pos.images[:64]])
    metrics["ms_per_image"] = {"numpy": ms_per_image(check, sample)}
    metrics["ms_per_image"]["onnxruntime"] = ms_per_image(
        BrainCheck(weights, check.threshold, session=onnx_session(out / ONNX)), sample)
    check.meta = {"created": metrics["created"], "command": command,
                  "held_out_kinds": cfg.held_out_kinds, "train_kinds": cfg.train_kinds,
                  "held_out_reject_rate": metrics["held_out_reject_rate"],
                  "mri_reject_rate_report": metrics["mri_reject_rate_report"],
                  "mri_reject_rate_report_shared_sets":
                      metrics["mri_reject_rate_report_shared_sets"]}
    check.save(out)
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_examples(out / "examples.png", pos, p_pos, neg, p_neg, check)
    write_card(out / "MODEL_CARD.md", cfg, metrics, command)
    return metrics
