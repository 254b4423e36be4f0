"""Classification speed on this CPU: training and inference throughput, batch-1 latency.

Prints one row per registered model (random inputs at the model's default size; weights do not
matter for speed), then the default recipe's time to accuracy from its run history.

    python benchmarks/bench_classify.py [--models a,b] [--run models/default]

Figures are medians of repeated timed calls after warm-up; compare rows only within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from mrimaster.models.registry import MODELS, build_model


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(name: str, train_batch: int, infer_batch: int, repeats: int,
                size: int | None = None, freeze: tuple[str, ...] = (),
                bf16: bool = True) -> dict[str, float]:
    size = size or MODELS[name].image_size
    net = build_model(name, 4, pretrained=False, image_size=size)
    net = net.to(memory_format=torch.channels_last)
    if name == "vgg16":  # the seed recipe trains only the classifier
        freeze = ("features.",)
    for pname, p in net.named_parameters():
        if pname.startswith(freeze):
            p.requires_grad = False
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], 1e-4)
    x = torch.randn(train_batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (train_batch,))

    def train_step() -> None:
        net.train()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    xb = torch.randn(infer_batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    x1 = xb[:1].contiguous(memory_format=torch.channels_last)
    net.eval()

    def infer(batch: torch.Tensor, bf16: bool = False) -> None:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            net(batch)

    t_train = _median_time(train_step, repeats)
    net.eval()
    t_inf = _median_time(lambda: infer(xb), repeats)
    t_inf_bf16 = _median_time(lambda: infer(xb, True), repeats) if bf16 else float("nan")
    t_one = _median_time(lambda: infer(x1), repeats * 5, warmup=3)
    return {"size": size, "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "train_img_s": train_batch / t_train, "infer_img_s": infer_batch / t_inf,
            "infer_bf16_img_s": infer_batch / t_inf_bf16, "latency_ms": 1000 * t_one}


def time_to_accuracy(run: Path, target: float) -> str:
    """When the recorded run first reached ``target`` validation macro F1, in wall-clock time.

    Uses ``elapsed_s`` where the history has it; older histories only have training throughput,
    so the time is estimated from it (training passes only, validation excluded).
    """
    history = json.loads((run / "history.json").read_text())
    n_train = sum(1 for line in (run / "split.csv").read_text().splitlines()
                  if line.endswith(",train"))
    spent = 0.0
    for row in history:
        spent = row.get("elapsed_s", spent + n_train / row["train_images_per_s"])
        if row["val_macro_f1"] >= target:
            how = "measured" if "elapsed_s" in row else "estimated from training throughput"
            return (f"default recipe ({run}): validation macro F1 {row['val_macro_f1']:.3f} >= "
                    f"{target} after epoch {row['epoch']}, {spent / 60:.1f} min ({how})")
    return f"default recipe ({run}): validation macro F1 never reached {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", type=Path, default=Path("models/default"))
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--no-bf16", default="vgg16",
                        help="models whose bf16 inference is not timed (slow without AMX)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU kernels "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print(f"{'model':<20}{'px':>5}{'params M':>10}{'train img/s':>13}{'infer img/s':>13}"
          f"{'bf16 img/s':>12}{'batch-1 ms':>12}")
    rows = [(name, name, None, ()) for name in args.models.split(",")]
    default_cfg = yaml.safe_load(Path("configs/default.yaml").read_text())
    rows.append(("default recipe", default_cfg["model"], default_cfg["image_size"],
                 tuple(default_cfg["freeze"])))
    for label, name, size, freeze in rows:
        r = bench_model(name, args.train_batch, args.infer_batch, args.repeats, size, freeze,
                        bf16=name not in args.no_bf16.split(","))
        print(f"{label:<20}{r['size']:>5}{r['params_m']:>10.1f}{r['train_img_s']:>13.1f}"
              f"{r['infer_img_s']:>13.1f}{r['infer_bf16_img_s']:>12.1f}{r['latency_ms']:>12.1f}",
              flush=True)
    if (args.run / "history.json").is_file():
        print(time_to_accuracy(args.run, args.target))


if __name__ == "__main__":
    main()
