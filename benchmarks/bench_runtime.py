"""Inference routes for the shipped classifier on this CPU, as ratios to eager fp32 in one run.

Part 1, the network alone (real slices of the held-out test part of the model's split):
img/s at batch 64, batch-1 latency and top-1 agreement with eager fp32, for eager fp32,
channels_last, bf16 autocast, torch.compile, ONNX Runtime fp32 / int8 static QDQ (the shipped
export) / int8 dynamic, and OpenVINO fp32 / bf16 / int8 (NNCF: the shipped export, where
kept).

Part 2, end to end (fresh processes, as a user runs them): ``mrimaster predict`` on
``--images`` slices with every trust field, per runtime; and ``mrimaster --help`` and
``predict`` on one image, cold, median of ``--cold`` runs. ``--baseline MODEL`` also times
``predict --runtime auto`` of another model folder on the same slices (the two alternated,
median of 3) and ``--end-to-end`` skips part 1.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/bench_runtime.py [--no-compile]

Compare rows only within one run: the machine's load changes absolute figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from bench_classify import _median_time  # same folder: run as `python benchmarks/...`

from mrimaster.data.images import model_input
from mrimaster.inference.graph import ENGINE_OF_RUNTIME, VARIANTS, engine_problem, open_graph
from mrimaster.inference.onnx_export import (
    FeatureNet,
    export_graph,
    int8_calibration_images,
    quantize_int8,
)
from mrimaster.models.checkpoint import load_classifier
from mrimaster.models.paths import resolve_model_path
from mrimaster.settings import load_settings
from mrimaster.training.fit_trust import CalibrateConfig, load_calibration_data

Route = Callable[[np.ndarray], np.ndarray]


def _logits_of(graph: Callable[[np.ndarray], dict[str, np.ndarray]]) -> Route:
    return lambda x: graph(x)["logits"]


def _torch_routes(net: torch.nn.Module, compile_: bool) -> dict[str, Route]:
    cl = FeatureNet(net).eval().to(memory_format=torch.channels_last)

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    def channels_last(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return cl(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))[0].numpy()

    def bf16(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = cl(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))[0]
        return out.float().numpy()

    routes: dict[str, Route] = {"eager fp32": eager, "eager channels_last": channels_last,
                                "channels_last + bf16 autocast": bf16}
    if compile_:
        compiled = torch.compile(net)

        def compiled_route(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return compiled(torch.from_numpy(x)).numpy()

        routes["torch.compile"] = compiled_route
    return routes


def _onnx_routes(folder: Path, net: torch.nn.Module, image_size: int, calib: np.ndarray,
                 tmp: Path) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    shipped = folder / VARIANTS["onnx-fp32"].graph
    if engine_problem("onnx-fp32") is None:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        def session(path: Path) -> Route:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return lambda x: sess.run(["logits"], {"image": x})[0]

        routes["ONNX Runtime fp32 (shipped)"] = session(shipped)
        fp32 = tmp / "fp32.onnx"  # float32 initializers, as the quantisers need
        export_graph(net, fp32, image_size)
        kept = (folder / VARIANTS["onnx-int8"].trust).is_file()
        quantize_int8(fp32, tmp / "static.onnx", calib)
        routes[f"ONNX Runtime int8 static QDQ ({'kept' if kept else 'not kept'})"] = \
            session(tmp / "static.onnx")
        logging.getLogger().setLevel(logging.ERROR)  # per-tensor notes of the quantiser
        quantize_dynamic(str(fp32), str(tmp / "dynamic.onnx"), weight_type=QuantType.QInt8)
        logging.getLogger().setLevel(logging.WARNING)
        routes["ONNX Runtime int8 dynamic"] = session(tmp / "dynamic.onnx")
    else:
        print(f"ONNX Runtime rows skipped: {engine_problem('onnx-fp32')}")
    if engine_problem("openvino-fp32") is None:
        # the project's own compile (open_graph): the hint each variant runs with
        for name, label, path in (("openvino-fp32", "OpenVINO f32", shipped),
                                  ("openvino-bf16", "OpenVINO bf16", shipped),
                                  ("openvino-int8", "OpenVINO int8, NNCF (kept)",
                                   folder / VARIANTS["openvino-int8"].graph)):
            if engine_problem(name) is not None or not path.is_file():
                # the int8 graph is written by the export only when its check held
                print(f"{label}: not measured ({engine_problem(name) or f'no {path.name}'})")
                continue
            routes[label] = _logits_of(open_graph(path, name))
    return routes


def network_table(clf_path: Path, images: np.ndarray, calib: np.ndarray, repeats: int,
                  compile_: bool) -> None:
    clf = load_classifier(clf_path)
    x = model_input(images)
    with tempfile.TemporaryDirectory() as tmp:
        routes = _torch_routes(clf.net, compile_)
        routes.update(_onnx_routes(clf_path.parent, clf.net, clf.image_size, calib, Path(tmp)))
        ref = routes["eager fp32"](x)
        rows = []
        for name, route in routes.items():
            start = time.perf_counter()
            out = np.concatenate([route(x[i:i + 64]) for i in range(0, len(x), 64)])
            first = time.perf_counter() - start
            batch = _median_time(partial(route, x[:64]), repeats)
            single = _median_time(partial(route, x[:1]), repeats * 4)
            rows.append((name, 64 / batch, 1000 * single,
                         float((out.argmax(1) == ref.argmax(1)).mean()), first))
    base_ips, base_ms = rows[0][1], rows[0][2]
    print(f"\n{'route':<42} {'img/s b64':>10} {'x eager':>8} {'b1 ms':>8} {'x eager':>8} "
          f"{'top-1 agree':>11} {'first pass s':>12}")
    for name, ips, ms, agree, first in rows:
        print(f"{name:<42} {ips:10.1f} {ips / base_ips:8.2f} {ms:8.2f} {base_ms / ms:8.2f} "
              f"{agree:11.4f} {first:12.1f}")


def _cli(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mrimaster.cli.main", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _versus(folder: Path, out: Path, model: str, baseline: str) -> None:
    times: dict[str, list[float]] = {baseline: [], model: []}
    for _ in range(3):
        for name in times:
            times[name].append(_cli(["predict", "--model", name, "--runtime", "auto",
                                     str(folder), "--output", str(out), "--format", "csv"]))
    base, this = (statistics.median(times[n]) for n in (baseline, model))
    n = len(list(folder.iterdir()))
    print(f"  predict --runtime auto, median of 3 alternated: baseline {baseline} {base:.2f} s "
          f"({n / base:.1f} img/s); {model} {this:.2f} s ({n / this:.1f} img/s); "
          f"x baseline {base / this:.2f}")


def end_to_end(paths: list[Path], model: str, cold: int, baseline: str | None = None) -> None:
    print(f"\nend to end, fresh processes ({len(paths)} slices, all trust fields)")
    runtimes = ["torch"] + [r for r in ("onnx", "openvino")
                            if any(engine_problem(v) is None for v in ENGINE_OF_RUNTIME[r])]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "slices"
        folder.mkdir()
        for i, p in enumerate(paths):
            shutil.copy(p, folder / f"{i:04d}{p.suffix}")
        if baseline:
            _versus(folder, Path(tmp) / "versus.csv", model, baseline)
        base = None
        for runtime in [*runtimes, "auto"]:
            seconds = _cli(["predict", "--model", model, "--runtime", runtime, str(folder),
                            "--output", str(Path(tmp) / f"{runtime}.csv"), "--format", "csv"])
            base = base or seconds
            print(f"  predict --runtime {runtime:<9} {seconds:6.2f} s  "
                  f"{len(paths) / seconds:7.1f} img/s  x torch {base / seconds:5.2f}")
        one = str(next(folder.iterdir()))
        for label, argv in (("mrimaster --help", ["--help"]),
                            ("predict one image (auto)", ["predict", one]),
                            ("predict one image (torch)", ["predict", "--runtime", "torch",
                                                           one])):
            times = [_cli(argv) for _ in range(cold)]
            print(f"  {label:<28} median of {cold} cold runs {statistics.median(times):6.2f} s")


def cpu_name() -> str:
    """The CPU model and its vector extensions that matter here, from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                 if ln.startswith("model name")), platform.machine())
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                      if ln.startswith("flags")), []))
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name} ({', '.join(ext)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--baseline", help="another model folder to time predict against")
    parser.add_argument("--end-to-end", action="store_true", help="skip the network table")
    args = parser.parse_args()
    settings = load_settings()
    path = resolve_model_path(args.model, settings.models_dir)
    data = load_calibration_data(path.parent, CalibrateConfig(str(path.parent)), settings)
    images = data.x_test
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); model {args.model}; "
          f"{len(images)} slices of the test part")
    if not args.end_to_end:
        network_table(path, images, int8_calibration_images(data.x_fit), args.repeats,
                      args.compile)
    from mrimaster.data.folders import collect_image_paths

    all_paths, _ = collect_image_paths([settings.data_root / "sartaj-training"])
    pick = np.linspace(0, len(all_paths) - 1, args.images).astype(int)
    end_to_end([all_paths[i] for i in pick], args.model, args.cold, args.baseline)


if __name__ == "__main__":
    main()
