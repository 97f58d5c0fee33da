"""Building blocks of the DIRformer: channel LayerNorm, IPR modulation, MDTA attention, gated FFN.

Module and attribute names follow the official state_dict layout (``norm1.body.weight``, ``attn.kernel.0``,
``ffn.project_in`` ...) so official checkpoints load without renaming.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from diffir.networks.config import IPR_DIM

LN_EPS = 1e-5


class _LayerNormBody(nn.Module):
    """Per-pixel normalisation over channels of a (B, C, H, W) tensor."""

    def __init__(self, channels: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, keepdim=True, unbiased=False)
        w = self.weight.view(1, -1, 1, 1)
        if self.bias is None:
            # "BiasFree": divides by the std about the mean but does NOT subtract the mean (official quirk).
            return x / torch.sqrt(var + LN_EPS) * w
        return (x - mean) / torch.sqrt(var + LN_EPS) * w + self.bias.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.body = _LayerNormBody(channels, with_bias=kind != "BiasFree")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def ipr_kernel(channels: int) -> nn.Sequential:
    """Linear(IPR → 2·C, no bias) producing the per-channel scale and shift."""
    return nn.Sequential(nn.Linear(IPR_DIM, channels * 2, bias=False))


def modulate(x: torch.Tensor, ipr: torch.Tensor, kernel: nn.Module) -> torch.Tensor:
    """x·a + b with [a, b] = kernel(IPR).  No "1 +" on the scale: the official networks learn it directly."""
    scale, shift = kernel(ipr).view(ipr.shape[0], -1, 1, 1).chunk(2, dim=1)
    return x * scale + shift


class Attention(nn.Module):
    """Transposed (channel) self-attention, "MDTA": cost linear in the number of pixels.

    The (C/heads)² attention matrix is built from sums over *all* pixels, so a tile of an image sees other
    statistics than the whole image.  ``stats_hook`` (None by default) lets tiled inference record and reuse
    whole-image statistics (:mod:`diffir.pipelines.attention_stats`); it is called with (module, q, k, v), each
    of shape (B, heads, C/heads, H, W), and returns the attended values in the same shape as v.
    """

    stats_hook: Callable[[Attention, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __init__(self, channels: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.kernel = ipr_kernel(channels)  # registration order = official state_dict order
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(modulate(x, ipr, self.kernel)))
        if self.stats_hook is not None:
            q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h, w) for t in qkv.chunk(3, dim=1))
            return self.project_out(self.stats_hook(self, q, k, v).reshape(b, c, h, w))
        # head index is the OUTER factor of the channel axis: (head c) -> head, c
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in qkv.chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class FeedForward(nn.Module):
    """Gated depth-wise FFN ("GDFN") with exact-erf GELU."""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)
        self.kernel = ipr_kernel(channels)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(modulate(x, ipr, self.kernel))).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int, hidden: int, bias: bool, layernorm: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(channels, layernorm)
        self.attn = Attention(channels, num_heads, bias)
        self.norm2 = LayerNorm(channels, layernorm)
        self.ffn = FeedForward(channels, hidden, bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ipr)
        return x + self.ffn(self.norm2(x), ipr)


class BlockStack(nn.ModuleList):
    """A sequence of transformer blocks sharing one IPR (keys ``<level>.<i>.*`` as in the official nets)."""

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, ipr)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


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
