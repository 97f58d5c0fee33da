"""Speed of one training step (forward, L1 backward, Adam) on two paths, as a ratio measured in one run.

    python benchmarks/train_step.py                                  # the bundled small deblurring S1 network
    python benchmarks/train_step.py --preset diffir_realsr_x4_s1 --batch 6 --size 32 --repeats 5
    python benchmarks/train_step.py --paths bf16,fp32                # train.amp: bf16 (autocast) against none

Paths, the first timed against the second: ``fast,reference`` (diffir's fast kernels against the official code's
operations, both float32) or ``bf16,fp32`` (the fast path with and without bf16 autocast, as ``train.amp`` runs it).

Random weights and inputs (speed does not depend on them), one process, paths alternating so that the machine's
load hits both alike.  The default network is the one of ``configs/bundled/deblur_small_s1.yaml`` (batch 4 of
96-px patches); ``--size`` is the LQ side.  Compare the ratio, not the seconds, across machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import diffir
from diffir.runtime import reference_path

SMALL = {"dim": 24, "num_blocks": [2, 2, 2, 2], "num_refinement_blocks": 2, "heads": [1, 2, 4, 8], "n_encoder_res": 2}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="diffir_deblur_s1", help="a stage-1 preset (default: diffir_deblur_s1)")
    p.add_argument("--overrides", default=json.dumps(SMALL), help="JSON config overrides (default: the small ones)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=96, help="LQ patch side in pixels (default: 96)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per path (default: 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as the bundled runs)")
    p.add_argument("--paths", default="fast,reference", choices=("fast,reference", "bf16,fp32"),
                   help="the two paths compared (default: fast,reference)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = diffir.create_model(args.preset, **json.loads(args.overrides)).train()
    d = net.descriptor
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    lq = torch.rand(args.batch, d.in_channels, args.size, args.size)
    gt = torch.rand(args.batch, d.out_channels, args.size * d.scale, args.size * d.scale)

    def step(amp: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = net(lq, gt)
        loss = (out.float() - gt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    first, second = args.paths.split(",")
    times: dict[str, list[float]] = {first: [], second: []}
    for i in range(args.repeats + 1):  # the first round warms up
        for path in times:
            with reference_path(path == "reference"):
                t = step(amp=path == "bf16")
            if i:
                times[path].append(t)
    a, b = (statistics.median(times[k]) for k in (first, second))
    params = sum(q.numel() for q in net.parameters())
    print(f"{args.preset} {params / 1e6:.2f}M parameters, batch {args.batch} x {args.size}px, "
          f"{args.threads} thread(s), median of {args.repeats} steps")
    print(f"  {first:9s} {a:.3f} s/step")
    print(f"  {second:9s} {b:.3f} s/step")
    print(f"  {first} / {second} = {a / b:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
