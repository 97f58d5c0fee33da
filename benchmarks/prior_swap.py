"""How much image-specific information a stage-1 model's prior (IPR) carries: restore each image with its own
ground-truth prior, with the prior of the next image in the folder, and with a zero prior.

    python benchmarks/prior_swap.py runs/bundled/sr_x4_small_v2_s1 \
        $DIFFIR_DATA/sr/Set5/HR $DIFFIR_DATA/sr/Set5/LR_bicubic/X4

If "another image's prior" scores as well as "own prior", the restoration network does not use what the prior says
about this image, and no stage-2 variant that estimates the prior (the paper's ablation) can be told apart by
fidelity on that task.  The zero prior shows that the network does read the prior's scale.  LQ images are cropped
to a multiple of the model's size multiple (GT to match), so the PSNRs are a little off the padded evaluation's.
Y-PSNR with crop = scale for SR, RGB otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import diffir
from diffir.io.images import read_image
from diffir.metrics import calculate_psnr
from diffir.pipelines.convert import as_float_batch


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[..., :3]  # grey -> RGB, drop alpha


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a stage-1 model (file or run folder)")
    p.add_argument("gt", type=Path, help="folder of ground-truth images")
    p.add_argument("lq", type=Path, help="folder of degraded images, paired with GT by sorted order")
    args = p.parse_args()

    model = diffir.load_model(args.model)
    d = model.descriptor
    if d.stage != 1:
        raise SystemExit(f"{args.model}: a stage-1 model is needed (its prior is read from the ground truth)")
    gts, lqs = sorted(args.gt.iterdir()), sorted(args.lq.iterdir())
    if len(gts) != len(lqs) or not gts:
        raise SystemExit(f"{args.gt} and {args.lq} must hold the same number of images")
    pairs = []
    for g, q in zip(gts, lqs, strict=True):
        lq, gt = _rgb(read_image(q).pixels), _rgb(read_image(g).pixels)
        h, w = (lq.shape[0] // d.size_multiple) * d.size_multiple, (lq.shape[1] // d.size_multiple) * d.size_multiple
        pairs.append((g.stem, lq[:h, :w], gt[: h * d.scale, : w * d.scale]))
    sr = d.task == "sr"
    with torch.no_grad():
        priors = [model.prior(as_float_batch(lq)[0], as_float_batch(gt)[0]) for _, lq, gt in pairs]
        rows = {"own prior": [], "next image's prior": [], "zero prior": []}
        for i, (_, lq, gt) in enumerate(pairs):
            for name, prior in zip(rows, (priors[i], priors[(i + 1) % len(pairs)], torch.zeros_like(priors[i])),
                                   strict=True):
                x, back = as_float_batch(lq)
                out = back(model.restore(x, prior))
                rows[name].append(calculate_psnr(out, gt, crop_border=d.scale if sr else 0, test_y_channel=sr))
    print(f"{args.model} on {len(pairs)} images of {args.gt}")
    print("| prior | PSNR (mean) | per image |\n|---|---:|---|")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.3f} | {' '.join(f'{v:.2f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
