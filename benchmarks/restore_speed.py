"""Which restore settings are fast here?  Ratios measured in one run (absolute times vary with load).

* tile size vs time (whole image vs tiles of 32/64/128 LR pixels, overlap 16) through ``diffir.Restorer``;
* fp32 vs bf16 vs fp16 autocast, one DIRformer forward;
* channels_last vs contiguous weights/input, one DIRformer forward.

    python benchmarks/restore_speed.py                 # official-size x4 SR net, random weights
    python benchmarks/restore_speed.py --tiny          # quick smoke run
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

import diffir
from diffir.pipelines.precision import autocast

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), n_encoder_res=1)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--preset", default="diffir_realsr_x4_s2")
    parser.add_argument("--size", type=int, default=128, help="LR image side for the tiling run")
    parser.add_argument("--forward-size", type=int, default=64, help="input side for precision/layout runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = diffir.create_model(args.preset, **(TINY if args.tiny else {})).eval()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.preset} "
          f"({'tiny' if args.tiny else 'official size'}), best of {args.repeats}")

    image = torch.rand(1, 3, args.size, args.size)
    diffir.Restorer(model, tile=0, device="cpu").restore(image[..., :32, :32])  # warm-up (allocator, oneDNN)
    base = None
    for tile in (0, 128, 64, 32):
        if tile >= args.size:
            continue
        r = diffir.Restorer(model, tile=tile, tile_overlap=16, device="cpu")
        t = best_of(lambda r=r: r.restore(image), args.repeats)
        base = base or t
        print(f"tile {tile or 'off':>4} ({args.size}x{args.size} LR): {t:7.2f} s   x{t / base:5.2f} vs whole image")

    x = torch.rand(1, 3, args.forward_size, args.forward_size)
    ipr = torch.rand(1, 256)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        ref = model(x, ipr=ipr)
        fp32 = best_of(lambda: model(x, ipr=ipr), args.repeats)
        print(f"fp32 forward {args.forward_size}x{args.forward_size}: {fp32:7.2f} s")
        for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            def run(dtype=dtype):
                with autocast(cpu, dtype):
                    return model(x, ipr=ipr)
            t = best_of(run, 1)
            err = (run().float() - ref).abs().max().item()
            print(f"{name} autocast forward: {t:7.2f} s   x{t / fp32:5.2f} vs fp32, max |diff| {err:.2e}")
        # Interleaved, so that a load change on a shared machine hits both layouts alike.
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        plain, cl = [], []
        for _ in range(max(3, args.repeats)):
            plain.append(best_of(lambda: model(x, ipr=ipr), 1))
            cl.append(best_of(lambda: model_cl(x_cl, ipr=ipr), 1))
        err = (model_cl(x_cl, ipr=ipr) - ref).abs().max().item()
        print(f"channels_last forward (interleaved): {min(cl):7.2f} s vs {min(plain):.2f} s contiguous   "
              f"x{min(cl) / min(plain):5.2f}, max |diff| {err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
