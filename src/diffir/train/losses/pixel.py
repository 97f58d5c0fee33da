"""Pixel losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred.float(), target.float())


def masked_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, known: float = 10.0, missing: float = 0.0
) -> torch.Tensor:
    """LaMa's masked L1: per-pixel weight ``known`` outside the hole and ``missing`` inside (mask 1 = hole),
    averaged over *all* pixels (so with missing = 0 the hole only lowers the mean, it is not renormalised)."""
    weight = (1 - mask) * known + mask * missing
    return (weight * (pred.float() - target.float()).abs()).mean()
