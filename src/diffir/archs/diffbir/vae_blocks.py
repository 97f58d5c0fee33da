"""Blocks of the LDM ``AutoencoderKL`` encoder/decoder (Stable Diffusion's VAE).

Every norm is GroupNorm(32, eps 1e-6).  Attribute names are the LDM keys (``norm1``, ``conv1``, ``nin_shortcut``,
``q``/``k``/``v``/``proj_out``, ``downsample.conv``, ``upsample.conv``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.diffbir.unet_blocks import Upsample  # the same nearest ×2 + conv as the UNet's

NORM_EPS = 1e-6


def vae_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=NORM_EPS)


class ResnetBlock(nn.Module):
    """norm-SiLU-conv, norm-SiLU-(dropout)-conv, plus the input (through a 1×1 ``nin_shortcut`` when the width
    changes).  The SD VAE has no timestep input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = vae_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = vae_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions (scale C^-1/2), 1×1 conv projections, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = vae_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)
        # (B, 1, H·W, C): one head whose width is all channels, so SDPA's default scale is C^-1/2.
        q, k, v = (p(h).flatten(2).transpose(1, 2).unsqueeze(1) for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad right/bottom by one, then a 3×3 stride-2 conv without padding (the LDM VAE's asymmetric
    downsampling; a symmetric padding-1 conv would shift the grid by half a pixel)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class MidBlock(nn.Module):
    """ResnetBlock, attention, ResnetBlock (``mid.block_1``, ``mid.attn_1``, ``mid.block_2``); the attention is
    there whatever ``attn_resolutions`` says."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution of the encoder (``down.<i>``) or decoder (``up.<i>``): ResnetBlocks, each followed by an
    attention block when the level has attention, then the optional resampler (``downsample`` / ``upsample``)."""

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, attention: bool,
                 resample: str | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(n_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(n_blocks if attention else 0))
        if resample == "down":
            self.downsample = Downsample(out_channels)
        elif resample == "up":
            self.upsample = Upsample(out_channels)
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if self.resample == "down":
            x = self.downsample(x)
        elif self.resample == "up":
            x = self.upsample(x)
        return x
