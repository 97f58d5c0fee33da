"""HI-Diff's latent encoders: an image → (B, group², 4·embed_dim) prior tokens.

``LE`` (stage 1) sees [GT, LQ] (GT first, 6 channels), ``LE_DM`` (stage 2) the LQ alone.  Both variants
(official ``latent_encoder_gelu`` / ``latent_encoder_lrelu``) are one class, split into the stages a tiled
computation needs:

1. :meth:`LatentEncoder.prepare` — PixelUnshuffle(4);
2. :meth:`LatentEncoder.feature_layers` — convolutions only (``conv1``, residual ``blocks``, ``conv2``);
3. ``pool`` — AdaptiveAvgPool2d((group, group)), whose bins overlap when H/4 or W/4 is not a multiple of group
   (PyTorch's start = ⌊i·In/Out⌋, end = ⌈(i+1)·In/Out⌉: official behaviour, kept);
4. :meth:`LatentEncoder.head` — flatten to row-major tokens, MLP-Mixer ``mlp``, then ``end`` (Linear + act).
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.hidiff.config import HIDiffConfig
from diffir.nn.mixer import MixerBlock


def _activation(variant: str) -> nn.Module:
    return nn.GELU() if variant == "gelu" else nn.LeakyReLU(0.1, inplace=True)


class ResidualConvs(nn.Sequential):
    """conv3×3 → act → conv3×3, plus identity (keys ``blocks.{i}.0`` / ``.2``)."""

    def __init__(self, channels: int, variant: str) -> None:
        super().__init__(nn.Conv2d(channels, channels, 3, padding=1), _activation(variant),
                         nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


class LatentEncoder(nn.Module):
    def __init__(self, config: HIDiffConfig, stage: int) -> None:
        super().__init__()
        c = config
        e, variant = c.embed_dim, c.encoder
        self.in_channels = 3 * (3 - stage)  # official assert: in_chans == 6 // stage
        self.unshuffle = nn.PixelUnshuffle(4)
        self.conv1 = nn.Sequential(nn.Conv2d(self.in_channels * 16, e, 3, padding=1), _activation(variant))
        self.blocks = nn.Sequential(*[ResidualConvs(e, variant) for _ in range(c.encoder_blocks)])
        if variant == "gelu":
            self.conv2: nn.Module = nn.Conv2d(e, e, 3, padding=1)
        else:
            self.conv2 = nn.Sequential(
                nn.Conv2d(e, e * 2, 3, padding=1), _activation(variant),
                nn.Conv2d(e * 2, e * 2, 3, padding=1), _activation(variant),
                nn.Conv2d(e * 2, e * 4, 3, padding=1), _activation(variant),
            )
        self.pool = nn.AdaptiveAvgPool2d((c.group, c.group))
        self.mlp = MixerBlock(c.num_tokens, c.encoder_width, c.encoder_patch_expansion, c.encoder_channel_expansion)
        self.end = nn.Sequential(nn.Linear(c.encoder_width, c.token_width), _activation(variant))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input transform: PixelUnshuffle(4) (H and W must be multiples of 4)."""
        return self.unshuffle(x)

    def feature_layers(self) -> nn.Sequential:
        """The convolutional part as one module (its receptive field is the halo a tile needs)."""
        return nn.Sequential(self.conv1, self.blocks, self.conv2)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled (B, C, group, group) → tokens (B, group², C'), token index = h·group + w."""
        return self.end(self.mlp(pooled.flatten(2).transpose(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.feature_layers()(self.prepare(x))))
