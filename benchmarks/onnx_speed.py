"""ONNX Runtime vs torch (fp32, CPU): the whole stage-2 inference of one model at one size.

Exports the model (``diffir.export.export_onnx``, not timed), then times, alternating in one process so that a
load change on a shared machine hits all alike, the same computation with the same noise:

* torch, default (fast) formulation:  ``restore(lq, sample_prior(condition_of(lq), noise))``;
* torch, reference formulation (what the graph is traced from);
* ONNX Runtime on the exported graph (CPU provider, same thread count).

and prints the medians and the ratios ORT / torch, plus the max |ORT − torch| of the outputs.

    python benchmarks/onnx_speed.py --model diffir_sr_x4_small --size 64x64
    python benchmarks/onnx_speed.py --preset hidiff_gopro_s2 --size 128x128 --repeats 3   # random weights
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import diffir
from diffir.diffusion.sampler import PreDrawnNoise
from diffir.export.onnx import OnnxRestorer, draw_noise, export_onnx, parse_size
from diffir.pipelines.model_source import load_inference_model
from diffir.runtime import reference_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="checkpoint path or model name (default diffir_sr_x4_small)")
    source.add_argument("--preset", default=None, help="a preset with random weights instead (see `diffir list`)")
    parser.add_argument("--size", default="64x64", help="LQ size HxW (a multiple of the model's size multiple)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, alternating")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.preset:
        torch.manual_seed(0)
        model = diffir.create_model(args.preset).eval()
        label = f"{args.preset} (random weights)"
    else:
        label = args.model or "diffir_sr_x4_small"
        model = load_inference_model(label)
    d = model.descriptor
    height, width = parse_size(args.size, d.size_multiple)
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {args.threads} thread(s), {label}: {type(model).__name__} {d.task} "
          f"x{d.scale}, {params / 1e6:.2f}M parameters, LQ {height}x{width}, median of {args.repeats}")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "model.onnx", opset=args.opset, check=False)
        print(f"export: {time.perf_counter() - t0:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
        runner = OnnxRestorer(path, threads=args.threads)

        lq = np.random.default_rng(0).random((1, d.in_channels, height, width), dtype=np.float32)
        feeds = draw_noise(1, d.prior_shape, runner.noise_draws, seed=0)
        draws = [torch.from_numpy(feeds["noise"])] if "noise" in feeds else []
        if "step_noise" in feeds:
            draws.extend(torch.from_numpy(feeds["step_noise"]).unbind(0))
        graph_feeds = {k: v for k, v in feeds.items() if k in runner.input_names}
        x = torch.from_numpy(lq)

        def torch_run() -> np.ndarray:
            with torch.inference_mode():
                prior = model.sample_prior(model.condition_of(x), PreDrawnNoise(draws))
                return model.restore(x, prior).numpy()

        def torch_reference() -> np.ndarray:
            with reference_path():
                return torch_run()

        def ort_run() -> np.ndarray:
            return runner.run_graph(lq, graph_feeds)

        runs = {"torch (fast path)": torch_run, "torch (reference)": torch_reference, "onnxruntime": ort_run}
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up (allocators, oneDNN / ORT kernels)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, t in med.items():
        print(f"{name:18s} {t * 1000:9.1f} ms   (min {min(times[name]) * 1000:.1f}, max {max(times[name]) * 1000:.1f})")
    ort = med["onnxruntime"]
    print(f"ORT / torch fast path: {ort / med['torch (fast path)']:.2f}   "
          f"ORT / torch reference: {ort / med['torch (reference)']:.2f}   (< 1: ORT faster)")
    diff = float(np.abs(outputs["onnxruntime"] - outputs["torch (fast path)"]).max())
    print(f"max |ORT - torch|: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
