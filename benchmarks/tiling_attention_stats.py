"""Tiled vs whole-image restoration of a trained model: whole-image vs tile-local attention statistics.

For each image and tile layout, the whole-image output of the model (default: the bundled ``diffir_sr_x4_small``;
``--model`` takes any stage-2 model, e.g. a HI-Diff run folder, which is then run on the real blurred photos)
is compared with the tiled outputs under ``tile_stats="global"`` (default: a first pass gathers whole-image
attention statistics) and ``tile_stats="local"`` (each tile attends with its own).  Reported: max and mean
|tiled − whole| of the 8-bit outputs in grey levels, the fraction of values more than 2 levels off, each tiled
run's time as a ratio of the whole-image time, and the price of the statistics pass: the ``global`` time as a
ratio of the ``local`` time of the same layout.  Times are the best of ``--repeats`` rounds that alternate the
whole-image and tiled runs (the machine may be shared: ratios from one run, not absolute seconds).
docs/restore.md, "Tiling", quotes this script's output.

    python benchmarks/tiling_attention_stats.py            # includes a 960×540 image: ~6 min on 2 CPU cores
    python benchmarks/tiling_attention_stats.py --quick    # 128² images only, ~1 min
    python benchmarks/tiling_attention_stats.py --large --repeats 3   # only the 960×540 image, best of 3
    python benchmarks/tiling_attention_stats.py --model runs/tiny_hidiff_s2   # deblurring: real blurred photos
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import diffir

SHARED = Path(os.environ.get("DIFFIR_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"

CASES = [  # (image, resize to (W, H) or None, [(tile, overlap), ...])
    ("sr/Set5/LR_bicubic/X4/babyx4.png", None, [(48, 16), (64, 16), (96, 32)]),
    ("realsr/RealSR/LR/Canon_003_LR4.png", None, [(48, 16), (64, 16), (96, 32)]),
]
LARGE = [("sr/Set14/HR/barbara.png", (960, 540), [(256, 32), (128, 32)])]
#: scale-1 models (deblurring): 256×256 crops of real blurred photos, and one whole 1280×720 photo
DEBLUR = [
    ("deblur/real_pairs/blur/DeepDeblur_Flower1.png", (0, 0, 256, 256), [(64, 16), (128, 32)]),
    ("deblur/real_pairs/blur/DeblurGAN_yolo.png", (200, 200, 456, 456), [(64, 16), (128, 32)]),
]
DEBLUR_LARGE = [("deblur/real_pairs/blur/DeepDeblur_Istanbul1.png", None, [(512, 32), (256, 32)])]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 960x540 image")
    parser.add_argument("--large", action="store_true", help="only the 960x540 image (1280x720 for deblurring)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; the best time of each is kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="diffir_sr_x4_small", help="any stage-2 model (name, file, run folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    whole_restorer = diffir.Restorer(args.model, tile=0)
    model = whole_restorer.model
    small, large = (DEBLUR, DEBLUR_LARGE) if whole_restorer.scale == 1 else (CASES, LARGE)
    cases = large if args.large else small + ([] if args.quick else large)
    print("| image (LR) | tile/overlap | stats | max | mean | > 2 levels | time / whole | global / local |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rel, size, layouts in cases:
        image = Image.open(SHARED / rel).convert("RGB")
        if size and len(size) == 4:
            image = image.crop(size)
        elif size:
            image = image.resize(size, Image.BICUBIC)
        lq = np.asarray(image)
        runs = {("whole", 0, 0): whole_restorer}
        for tile, overlap in layouts:
            for stats in ("global", "local"):
                runs[(stats, tile, overlap)] = diffir.Restorer(model, tile=tile, tile_overlap=overlap, tile_stats=stats)
        outs: dict = {}
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):
            for key, r in runs.items():
                outs[key], t = _timed(lambda r=r, lq=lq: r.restore(lq).astype(int))
                best[key] = min(best[key], t)
        whole, t_whole = outs[("whole", 0, 0)], best[("whole", 0, 0)]
        name = f"{Path(rel).name} {lq.shape[1]}×{lq.shape[0]}"
        for tile, overlap in layouts:
            for stats in ("global", "local"):
                key = (stats, tile, overlap)
                d = np.abs(outs[key] - whole)
                price = f"×{best[key] / best[('local', tile, overlap)]:.2f}" if stats == "global" else ""
                print(f"| {name} | {tile}/{overlap} | {stats} | {d.max()} | {d.mean():.4f} | "
                      f"{(d > 2).mean():.4%} | ×{best[key] / t_whole:.2f} | {price} |", flush=True)


if __name__ == "__main__":
    main()
