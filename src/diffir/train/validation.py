"""Validation during training: whole-image restoration of a validation set, PSNR/SSIM and an image grid."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffir.nn.padding import crop_to, pad_to_multiple, reflect_indices
from diffir.train.data import sample_seed


@torch.no_grad()
def evaluate(model: nn.Module, items: Iterable[dict[str, torch.Tensor]], device: torch.device, stage: str,
             degradation: nn.Module | None, crop_border: int, y_channel: bool,
             seed: int, steps: int = 50) -> tuple[dict[str, float], torch.Tensor | None]:
    """Mean PSNR/SSIM over ``items`` (batch-1 dicts) and an [LQ | output | GT] grid of the first image.

    GT-only items are degraded with ``degradation`` (seeded per image, so every validation sees the same LQ);
    inpainting outputs are composited with the known pixels before scoring, as LaMa's evaluator does, and are
    also scored over the holes alone (``psnr_hole``, as ``diffir eval`` reports it): the whole-image PSNR mixes
    in the known pixels, which every method keeps.
    """
    was_training = model.training
    model.eval()
    psnrs, ssims, hole_psnrs, grid = [], [], [], None
    for i, item in enumerate(items):
        batch = {k: v.to(device) for k, v in item.items() if torch.is_tensor(v)}
        if degradation is not None:
            g = torch.Generator().manual_seed(sample_seed(seed, i))
            pair = degradation(batch["gt"], generator=g)
            batch.update(lq=pair["lq"], gt=pair["gt"])
        out = restore_image(model, batch, stage, seed, steps)
        if model.descriptor.task == "inpaint":
            out = batch["mask"] * out + (1 - batch["mask"]) * batch["gt"]
            if batch["mask"].any():
                hole_psnrs.append(hole_psnr(out, batch["gt"], batch["mask"]))
        p, s = psnr_ssim(out, batch["gt"], crop_border, y_channel)
        psnrs.append(p)
        ssims.append(s)
        if grid is None:
            grid = image_grid(batch["lq"][:, :3], out, batch["gt"])
    model.train(was_training)
    result = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}
    if hole_psnrs:
        result["psnr_hole"] = float(np.mean(hole_psnrs))
    return result, grid


def restore_image(model: nn.Module, batch: dict[str, torch.Tensor], stage: str, seed: int,
                  steps: int = 50) -> torch.Tensor:
    """Whole-image inference, padded exactly as ``diffir restore`` / ``diffir eval`` pad (so the PSNR logged here
    is the one eval reports): reflect-pad the LQ to the network's size multiple, crop the output.

    Stage-1 networks are GT-guided (CPEN_S1 sees the GT, as in the official validation); S2/GAN networks sample
    their IPR from noise with a fixed seed, as the Restorer does.  A model with its own training objective
    (DiffBIR) gives its ``validation_output``: the cleaner's output (stage 1) or a ``steps``-step sampling (stage 2),
    at the LQ's size.
    """
    lq, gt = batch["lq"], batch["gt"]
    if hasattr(model, "validation_output"):
        return model.validation_output(lq, torch.Generator().manual_seed(seed), steps).clamp(0, 1)
    d = model.descriptor
    scale = d.scale
    h, w = lq.shape[-2:]
    lq_p = pad_to_multiple(lq, d.size_multiple)
    if stage == "s1":
        out = model(lq_p, _pad_to(gt, lq_p.shape[-2] * scale, lq_p.shape[-1] * scale))
    else:
        out = model(lq_p, generator=torch.Generator().manual_seed(seed))
    if isinstance(out, tuple):
        out = out[0]
    return crop_to(out, h * scale, w * scale).clamp(0, 1)


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad (bottom/right) or crop ``x`` to ``height × width``: the GT that goes with the padded LQ."""
    x = x[..., :height, :width]
    if x.shape[-2] < height:
        x = x.index_select(-2, reflect_indices(x.shape[-2], height).to(x.device))
    if x.shape[-1] < width:
        x = x.index_select(-1, reflect_indices(x.shape[-1], width).to(x.device))
    return x


def psnr_ssim(out: torch.Tensor, gt: torch.Tensor, crop: int, y: bool) -> tuple[float, float]:
    """BasicSR PSNR/SSIM on rounded 8-bit images (diffir.metrics); a plain PSNR if that module is missing."""
    a, b = pixels(out), pixels(gt)
    try:
        from diffir.metrics.psnr_ssim import calculate_psnr, calculate_ssim
    except ImportError:
        if crop:
            a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
        mse = float(np.mean((a - b) ** 2))
        return (float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)), float("nan")
    return (calculate_psnr(a, b, crop, input_order="HWC", test_y_channel=y),
            calculate_ssim(a, b, crop, input_order="HWC", test_y_channel=y))


def hole_psnr(out: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR over the hole pixels of rounded 8-bit images (``diffir.metrics.calculate_psnr_hole``)."""
    from diffir.metrics.psnr_ssim import calculate_psnr_hole

    return calculate_psnr_hole(pixels(out), pixels(gt), mask[0, 0].cpu().numpy())


def pixels(x: torch.Tensor) -> np.ndarray:
    """The first image of a [0, 1] batch as rounded 8-bit values (float HWC), as the metrics read files."""
    return (x[0].float().clamp(0, 1) * 255).round().permute(1, 2, 0).cpu().numpy()


def image_grid(lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """[LQ (nearest-upsampled) | output | GT] side by side, CHW in [0, 1]."""
    lq = F.interpolate(lq.float(), size=gt.shape[-2:], mode="nearest")
    return torch.cat([lq[0], out[0].float(), gt[0].float()], dim=-1).clamp(0, 1).cpu()
