"""How far is tiled restoration from whole-image restoration, per IPR strategy?  (docs/restore.md §Tiling)

For each task, one real image, one model (official size, random weights, or ``--tiny``), we compare the
whole-image output with tiled outputs under four strategies:

* ``shared``    — ours: one IPR per image (CPEN_S2 evaluated tile by tile = the exact whole-image value),
                  tiles blended with a sin² window;
* ``shared_hard`` — same IPR, overlap 0 (tiles pasted edge to edge: what seams look like without blending);
* ``downscaled`` — one IPR per image from CPEN_S2 on the image downscaled ×0.5 (a cheaper proxy);
* ``per_tile``  — naive: every tile samples its own IPR from its own content (same seed).

Reported (in 1/255 units): max and mean |tiled − whole|, the largest relative deviation of a used IPR from
the whole-image IPR, the mean |whole − LQ baseline| (how much the network body changes the image) and the
max change between seeds 0 and 1 (how much the IPR matters at all), to put the differences in proportion.
Random CPENs give a small, nearly content-independent IPR, so with random weights the IPR strategies can hardly
differ; what the numbers do show is the cost of the DIRformer's lost context and the effect of blending.

    python benchmarks/tiling_seams.py            # official-size random-weight nets, ~10 min on 2 CPU cores
    python benchmarks/tiling_seams.py --tiny     # about a minute
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import diffir
from diffir.nn.padding import pad_to_multiple
from diffir.pipelines.tiling import make_grid, run_tiled

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), n_encoder_res=1)

CASES = {
    # name: (preset, image, mask or None, crop, tile, overlap)
    "sr_x4": ("diffir_realsr_x4_s2", "realsr/RealSR/LR/Canon_001_LR4.png", None, 128, 64, 16),
    "deblur": ("diffir_deblur_s2", "deblur/real_pairs/blur/DeepDeblur_Flower1.png", None, 256, 128, 32),
    "inpaint": ("diffir_inpaint_celeba_s2", "inpaint/fixtures/EC_celeba/images/celeba_01.png",
                "inpaint/fixtures/EC_celeba/masks/celeba_01.png", 256, 128, 32),
}


def load(rel: str, crop: int, gray: bool = False) -> torch.Tensor:
    im = Image.open(SHARED / rel).convert("L" if gray else "RGB")
    a = np.asarray(im, dtype=np.float32)[:crop, :crop] / 255
    t = torch.from_numpy(a)
    return (t[None] if gray else t.permute(2, 0, 1))[None].contiguous()


def tiled(model, lq, tile, overlap, ipr_of, fn_of):
    grid = make_grid(*lq.shape[-2:], tile, overlap, model.config.size_multiple)
    return run_tiled(fn_of(ipr_of(lq)), lq, grid, model.config.scale)


def build(preset: str, tiny: bool):
    torch.manual_seed(0)
    kw = dict(TINY, num_refinement_blocks=0 if "inpaint" in preset else 1) if tiny else {}
    model = diffir.create_model(preset, **kw).eval()
    return model


def run_case(name: str, tiny: bool) -> None:
    preset, image, mask, crop, tile, overlap = CASES[name]
    model = build(preset, tiny)
    rgb = load(image, crop)
    if mask:
        hole = (load(mask, crop, gray=True) > 0.5).float()
        lq = torch.cat([rgb * (1 - hole), hole], 1)
    else:
        lq = rgb
    lq = pad_to_multiple(lq, model.config.size_multiple)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.inference_mode():
        t0 = time.perf_counter()
        ipr_whole = model.estimate_ipr(lq, generator=gen())
        whole = model(lq, ipr=ipr_whole).clamp(0, 1)
        t_whole = time.perf_counter() - t0
        baseline = F.interpolate(lq[:, :3], scale_factor=model.config.scale, mode="nearest")
        body = (whole - baseline).abs().mean().item() * 255
        other_seed = model(lq, generator=torch.Generator().manual_seed(1)).clamp(0, 1)
        seed_diff = (other_seed - whole).abs().max().item() * 255
        used: list[torch.Tensor] = []

        def shared_ipr(x):
            return model.estimate_ipr(cond=model.condition_of(x), generator=gen())

        def down_ipr(x):
            small = F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True)
            small = pad_to_multiple(small, model.config.size_multiple)
            return model.estimate_ipr(cond=model.condition_of(small), generator=gen())

        def with_ipr(ipr):
            used.append(ipr)
            return lambda t: model(t, ipr=ipr.expand(t.shape[0], -1))

        def own_ipr(_):
            def fn(t):
                ipr = model.estimate_ipr(t, generator=gen())
                used.append(ipr)
                return model(t, ipr=ipr)
            return fn

        strategies = {
            "shared": (shared_ipr, with_ipr, overlap),
            "shared_hard": (shared_ipr, with_ipr, 0),
            "downscaled": (down_ipr, with_ipr, overlap),
            "per_tile": (lambda x: None, own_ipr, overlap),
        }
        print(f"{name:8} {'whole':12} {'-':>7} {'-':>7} {'-':>9}   body {body:5.2f}, seed 0 vs 1: max {seed_diff:5.2f}"
              f"   {t_whole:6.1f}s")
        for label, (ipr_of, fn_of, ov) in strategies.items():
            used.clear()
            t0 = time.perf_counter()
            out = tiled(model, lq, tile, ov, ipr_of, fn_of).clamp(0, 1)
            dt = time.perf_counter() - t0
            diff = (out - whole).abs() * 255
            spread = max((u - ipr_whole).norm().item() for u in used) / ipr_whole.norm().item()
            print(f"{name:8} {label:12} {diff.max().item():7.2f} {diff.mean().item():7.3f} {spread:9.4f}   "
                  f"tile {tile} overlap {ov:<3}                  {dt:6.1f}s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random nets (fast, less meaningful)")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, models: "
          f"{'tiny' if args.tiny else 'official size'}, random weights (seed 0)")
    print(f"{'case':8} {'strategy':12} {'max':>7} {'mean':>7} {'IPR dev':>9}   (|tiled - whole| in 1/255; IPR dev ="
          " max ||ipr - ipr_whole|| / ||ipr_whole||)")
    for name in args.cases:
        run_case(name, args.tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
