"""Forward-pass speed of DiffIR S2 networks: fp32 vs bf16 autocast vs channels_last, as ratios in one run.

    python benchmarks/bench_forward.py --preset diffir_sr_x4_s2 --size 64 --repeats 3

Random weights (speed does not depend on them).  Prints median seconds per forward and each variant's ratio to
fp32 measured in the same process; pick fast paths from these numbers on your machine, not from assumptions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import diffir


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="diffir_sr_x4_s2")
    p.add_argument("--size", type=int, default=64, help="LQ side in pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = diffir.create_model(args.preset).eval()
    c = model.config
    lq = torch.rand(1, c.in_channels, args.size, args.size)
    g = torch.Generator().manual_seed(0)

    def run(m, x, autocast=None):
        def f():
            with torch.inference_mode(), torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
                m(x, generator=g)
        return f

    results = {"fp32": median_time(run(model, lq), args.repeats)}
    results["bf16 autocast"] = median_time(run(model, lq, torch.bfloat16), args.repeats)
    cl = model.to(memory_format=torch.channels_last)
    results["channels_last"] = median_time(run(cl, lq.to(memory_format=torch.channels_last)), args.repeats)
    print(f"{args.preset} at {args.size}x{args.size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, sec in results.items():
        print(f"  {name:15s} {sec:8.3f} s   ratio to fp32 {sec / results['fp32']:.2f}")


if __name__ == "__main__":
    main()
