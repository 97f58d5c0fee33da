"""CPEN: the compact IR prior extraction network (image → 256-d IPR), and its per-task input composition."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.diffir.config import CPEN_FEATS, DiffIRConfig
from diffir.archs.diffir.layers import ResBlock


class CPEN(nn.Module):
    """conv → R ResBlocks → 3 convs (64→128→128→256) → global average → 2-layer MLP; LeakyReLU(0.1) throughout.

    The Sequential indices (``E.0``, ``E.2``…, ``mlp.0``, ``mlp.2``) are the official state_dict keys.
    """

    def __init__(self, in_channels: int, n_encoder_res: int) -> None:
        super().__init__()
        n = CPEN_FEATS
        act = lambda: nn.LeakyReLU(0.1, inplace=True)  # noqa: E731
        self.E = nn.Sequential(
            nn.Conv2d(in_channels, n, 3, padding=1), act(),
            *[ResBlock(n) for _ in range(n_encoder_res)],
            nn.Conv2d(n, n * 2, 3, padding=1), act(),
            nn.Conv2d(n * 2, n * 2, 3, padding=1), act(),
            nn.Conv2d(n * 2, n * 4, 3, padding=1), act(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.mlp = nn.Sequential(nn.Linear(n * 4, n * 4), act(), nn.Linear(n * 4, n * 4), act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.E(x).flatten(1))


def prior_lq_part(config: DiffIRConfig, lq: torch.Tensor) -> torch.Tensor:
    """The LQ part of the CPEN input: SR ×4 LR as is, SR ×2 unshuffle(2), everything else unshuffle(4)."""
    f = config.prior_lq_factor
    return lq if f == 1 else F.pixel_unshuffle(lq, f)


def prior_gt_part(gt: torch.Tensor) -> torch.Tensor:
    """The GT part of the CPEN_S1 input: always pixel-unshuffle(4) of the ground truth."""
    return F.pixel_unshuffle(gt, 4)


def prior_s1_input(config: DiffIRConfig, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CPEN_S1 input: [LQ part, GT part] along channels (both at 1/4 of the output resolution)."""
    return torch.cat([prior_lq_part(config, lq), prior_gt_part(gt)], dim=1)
