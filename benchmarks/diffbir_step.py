"""What one DiffBIR diffusion step costs on this machine: the released SD 2.1-base UNet + IRControlNet (1.23 G
parameters) at full size, with random weights (the timing does not depend on the values).

One sampling step with classifier-free guidance is two ControlLDM forwards (cond and uncond); a restore is
``--steps`` of them plus the VAE encoder/decoder and the cleaner once.  Prints seconds per step, the VAE and
cleaner times, and the process's peak resident memory.

    python benchmarks/diffbir_step.py                    # 512x512 output (64x64 latent), 2 threads
    python benchmarks/diffbir_step.py --size 256 --threads 1
    python benchmarks/diffbir_step.py --tiny             # the tiny pipeline, a smoke run
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

import diffir


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latent = size / 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = "diffbir_tiny_s2" if args.tiny else "diffbir_v2.1_sr_s2"
    t0 = time.perf_counter()
    model = diffir.create_model(name).eval()
    built = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    cldm = model.cldm
    z = torch.randn(1, 4, args.size // 8, args.size // 8)
    t = torch.tensor([500])
    ctx = torch.randn(1, 77, cldm.unet.config.context_dim)
    image = torch.rand(1, 3, args.size, args.size)
    scales = [1.0] * (len(cldm.controlnet.zero_convs) + 1)
    with torch.inference_mode():
        forward = timed(lambda: cldm(z, t, ctx, z, scales), args.repeats)
        encode = timed(lambda: cldm.vae_encode(image * 2 - 1), 1)
        decode = timed(lambda: cldm.vae_decode(z), 1)
        clean = timed(lambda: model.clean(image), 1)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: {params / 1e9:.2f} G parameters (built in {built:.0f} s), {args.size}x{args.size} image, "
          f"{args.threads} thread(s)")
    print(f"  ControlLDM forward {forward:.2f} s -> {2 * forward:.2f} s per step with CFG "
          f"({forward:.2f} s without); 10 steps ~ {20 * forward + encode + decode + clean:.0f} s per image")
    print(f"  VAE encode {encode:.2f} s, VAE decode {decode:.2f} s, cleaner {clean:.2f} s")
    print(f"  peak resident memory {peak_mib:,.0f} MiB (float32 weights: {params * 4 / 2**20:,.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
