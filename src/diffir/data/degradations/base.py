"""The :class:`Degradation` interface shared by every on-the-fly degradation."""

from __future__ import annotations

import torch
from torch import nn


class Degradation(nn.Module):
    """``deg(gt, generator=None) -> {"lq": ..., "gt": ...}`` on a (B, 3, H, W) batch in [0, 1].

    Subclasses are vectorised in torch, run on ``gt.device`` and are deterministic for a given generator
    (see :mod:`diffir.data.rng`).  The returned ``gt`` may differ from the input (cropped, sharpened).
    They hold no trainable parameters and work under ``torch.no_grad()``.
    """

    scale: int = 1

    def forward(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def _check(gt: torch.Tensor) -> None:
        if gt.dim() != 4 or gt.shape[1] != 3:
            raise ValueError(f"degradations expect a (B, 3, H, W) batch, got shape {tuple(gt.shape)}")
        if not gt.is_floating_point():
            raise ValueError(f"degradations expect float images in [0, 1], got dtype {gt.dtype}")
