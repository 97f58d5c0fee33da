"""DIRformer blocks: the shared Restormer blocks (:mod:`diffir.nn.restormer`) modulated by the IPR.

Module and attribute names follow the official state_dict layout (``norm1.body.weight``, ``attn.kernel.0``,
``ffn.project_in`` ...) so official checkpoints load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.diffir.config import IPR_DIM
from diffir.nn.restormer import GDFN, MDTA, Affine, RestormerBlock


def ipr_kernel(channels: int) -> nn.Sequential:
    """Linear(IPR → 2·C, no bias) producing the per-channel scale and shift."""
    return nn.Sequential(nn.Linear(IPR_DIM, channels * 2, bias=False))


def ipr_affine(kernel: nn.Module, ipr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[a, b] = kernel(IPR): the (B, C) scale and shift, x·a + b.  No "1 +" on the scale: the official
    networks learn it directly."""
    scale, shift = kernel(ipr).chunk(2, dim=1)
    return scale, shift


class Attention(MDTA):
    """MDTA whose (normalised) input is first modulated by the IPR (``attn.kernel``)."""

    def add_modulation(self, channels: int) -> None:
        self.kernel = ipr_kernel(channels)  # registration order = official state_dict order

    def modulation(self, prior: torch.Tensor | None) -> Affine:
        return ipr_affine(self.kernel, prior)


class FeedForward(GDFN):
    """GDFN whose input is first modulated by the IPR (``ffn.kernel``, registered after the convs)."""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__(channels, hidden, bias)
        self.kernel = ipr_kernel(channels)

    def modulation(self, prior: torch.Tensor | None) -> Affine:
        return ipr_affine(self.kernel, prior)


class TransformerBlock(RestormerBlock):
    def __init__(self, channels: int, num_heads: int, hidden: int, bias: bool, layernorm: str) -> None:
        super().__init__(channels, layernorm, Attention(channels, num_heads, bias), FeedForward(channels, hidden, bias))


class BlockStack(nn.ModuleList):
    """A sequence of transformer blocks sharing one IPR (keys ``<level>.<i>.*`` as in the official nets)."""

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, ipr)
        return x


class ResBlock(nn.Module):
    """conv3×3 → LeakyReLU(0.1) → conv3×3, plus identity (EDSR-style, no scaling, no norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x
