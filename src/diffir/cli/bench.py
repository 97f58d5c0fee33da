"""``diffir bench``: per model and LQ size, parameters, MACs, ms per image and per output megapixel, achieved
GFLOP/s and its share of this machine's matmul peak, peak memory and page faults; fast vs reference path.

    diffir bench                                   # the paper's SR x4 net at 128x128 and deblurring net at 256x256
    diffir bench --path both --fresh --repeats 3   # both formulations, each run a fresh process, alternating
    diffir bench -m diffir_sr_x4_small --size 64x64 128x128 --precision bf16 --json bench.json

Columns and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", nargs="+", action="extend", default=None, metavar="M",
                   help="preset name (random weights, see `diffir list`), bundled model name or checkpoint path; "
                        "default: diffir_sr_x4_s2 and diffir_deblur_s2")
    p.add_argument("--size", nargs="+", action="extend", default=None, metavar="HxW",
                   help="LQ input size(s) for every model, HxW or N (default: 128x128 for SR x2/x4, else 256x256)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N] (default: auto)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast precision of the restoration network (default: fp32)")
    p.add_argument("--path", default="fast", choices=["fast", "reference", "both"],
                   help="network formulation; both = alternate and report reference/fast (default: fast)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path (default: 3; median reported)")
    p.add_argument("--threads", default="auto", help="torch threads: auto (measured) or a count (default: auto)")
    p.add_argument("--fresh", action="store_true",
                   help="each timed run in a fresh Python process (cold forward, allocator and page faults "
                        "counted, as a user's command runs it)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every number and run to FILE")
    p.add_argument("--peak-size", type=int, default=2048, metavar="N",
                   help="side of the square matmul that measures the peak (default: 2048)")


def run(args: argparse.Namespace) -> int:
    import sys

    from diffir.runtime import keep_freed_memory

    keep_freed_memory()  # first, before the heap grows

    from diffir.bench import format_table, run_bench, write_json
    from diffir.errors import DiffIRError

    if args.peak_size < 1:
        raise DiffIRError(f"--peak-size {args.peak_size}: use 1 or more")

    def progress(message: str) -> None:
        print(f"diffir bench: {message}", file=sys.stderr, flush=True)

    report = run_bench(
        args.model, args.size, device=args.device, precision=args.precision, path=args.path, repeats=args.repeats,
        threads=args.threads, fresh=args.fresh, peak_size=args.peak_size, progress=progress,
    )
    print(format_table(report), flush=True)
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return 0
