"""Crops, padding and flip/rotation augmentation on CHW tensors (the same op applied to aligned pairs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rand_int(high: int, generator: torch.Generator | None = None) -> int:
    """Uniform integer in [0, high) from torch's RNG (so DataLoader worker seeding controls it)."""
    if high <= 1:
        return 0
    return int(torch.randint(high, (1,), generator=generator, device="cpu").item())


def pad_to_min_size(img: torch.Tensor, min_h: int, min_w: int) -> torch.Tensor:
    """Pad bottom/right so that the image is at least ``min_h``×``min_w``.

    Reflection without repeating the border row (OpenCV's BORDER_REFLECT_101, torch's "reflect") like the
    reference data loaders; falls back to edge replication when the image is too small to reflect.
    """
    h, w = img.shape[-2:]
    ph, pw = max(0, min_h - h), max(0, min_w - w)
    if ph == 0 and pw == 0:
        return img
    mode = "reflect" if ph < h and pw < w else "replicate"
    batched = img[None] if img.dim() == 3 else img
    out = F.pad(batched, (0, pw, 0, ph), mode=mode)
    return out[0] if img.dim() == 3 else out


def dihedral(img: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """One of the 8 flip/rot90 combinations (applied in the order hflip, vflip, transpose)."""
    if hflip:
        img = img.flip(-1)
    if vflip:
        img = img.flip(-2)
    if transpose:
        img = img.transpose(-2, -1)
    return img


def random_dihedral_ops(mode: bool | str, generator: torch.Generator | None = None) -> tuple[bool, bool, bool]:
    """Sample the flags for :func:`dihedral`.

    ``mode`` True / "flip_rot": each of hflip, vflip and transpose with probability 1/2, i.e. the 8
    combinations uniformly; "hflip": horizontal flip only (Real-ESRGAN / LaMa style); False / "none": nothing.
    """
    if mode is False or mode == "none" or mode is None:
        return False, False, False
    if mode == "hflip":
        return rand_int(2, generator) == 1, False, False
    if mode is True or mode == "flip_rot":
        return tuple(rand_int(2, generator) == 1 for _ in range(3))  # type: ignore[return-value]
    raise ValueError(f"unknown augment mode {mode!r}; use True, False, 'hflip' or 'flip_rot'")


def paired_random_crop(
    lq: torch.Tensor,
    gt: torch.Tensor,
    gt_patch: int,
    scale: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned crops: LQ patch ``gt_patch // scale`` at (top, left), GT patch at (top·scale, left·scale)."""
    lq_patch = gt_patch // scale
    h, w = lq.shape[-2:]
    top = rand_int(h - lq_patch + 1, generator)
    left = rand_int(w - lq_patch + 1, generator)
    lq_out = lq[..., top : top + lq_patch, left : left + lq_patch]
    gt_out = gt[..., top * scale : top * scale + gt_patch, left * scale : left * scale + gt_patch]
    return lq_out, gt_out


def random_crop(img: torch.Tensor, patch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random ``patch``×``patch`` window (the image must be at least that large)."""
    h, w = img.shape[-2:]
    top = rand_int(h - patch + 1, generator)
    left = rand_int(w - patch + 1, generator)
    return img[..., top : top + patch, left : left + patch]
