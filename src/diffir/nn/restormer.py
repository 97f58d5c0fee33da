"""Restormer building blocks shared by DiffIR's DIRformer and HI-Diff's Transformer.

Channel LayerNorm, MDTA (transposed attention), GDFN (gated depth-wise FFN), down/up-sampling.  Module and
attribute names follow the official state_dict layouts (``norm1.body.weight``, ``attn.qkv``, ``ffn.project_in``
...) so official checkpoints load without renaming.  An architecture that modulates attention or the FFN with
its prior subclasses :class:`MDTA` / :class:`GDFN` and adds its own parameters (see :meth:`MDTA.add_modulation`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-5
LAYERNORMS = ("BiasFree", "WithBias")

#: ``hook(attn, q, k) -> attention matrix`` replacing :meth:`MDTA.matrix` (tiled inference, see
#: :mod:`diffir.pipelines.attention_stats`); q, k are (B, heads, C/heads, H, W).
StatsHook = Callable[["MDTA", torch.Tensor, torch.Tensor], torch.Tensor]


class _LayerNormBody(nn.Module):
    """Normalisation over one axis: channels of a (B, C, H, W) map (``dim=1``) or the last axis of tokens."""

    def __init__(self, channels: int, with_bias: bool, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=self.dim, keepdim=True, unbiased=False)
        shape = [1] * x.dim()
        shape[self.dim] = -1
        w = self.weight.view(shape)
        if self.bias is None:
            # "BiasFree": divides by the std about the mean but does NOT subtract the mean (official quirk).
            return x / torch.sqrt(var + LN_EPS) * w
        return (x - mean) / torch.sqrt(var + LN_EPS) * w + self.bias.view(shape)


class LayerNorm(nn.Module):
    """Restormer LayerNorm (``WithBias`` or ``BiasFree``) over channels (``dim=1``) or over the last axis."""

    def __init__(self, channels: int, kind: str, dim: int = 1) -> None:
        super().__init__()
        self.body = _LayerNormBody(channels, with_bias=kind != "BiasFree", dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MDTA(nn.Module):
    """Multi-Dconv-head transposed attention: a (C/heads)² channel-attention matrix per head, built from sums
    over *all* pixels, so its cost is linear in the number of pixels.

    ``stats_hook`` (None: the plain computation) replaces :meth:`matrix` during tiled inference so that every
    tile attends with whole-image statistics.
    """

    def __init__(self, channels: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.add_modulation(channels)  # before qkv: the official DiffIR key order puts its kernel there
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)
        self.stats_hook: StatsHook | None = None

    def add_modulation(self, channels: int) -> None:
        """Subclasses whose official layout has modulation weights before ``qkv`` register them here."""

    def matrix(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax(normalize(q)·normalize(k)ᵀ·temperature) over (B, heads, c, H, W) q and k."""
        q = F.normalize(q.flatten(-2), dim=-1)
        k = F.normalize(k.flatten(-2), dim=-1)
        return ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x))
        # head index is the OUTER factor of the channel axis: (head c) -> head, c
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h, w) for t in qkv.chunk(3, dim=1))
        hook = self.stats_hook
        attn = self.matrix(q, k) if hook is None else hook(self, q, k)
        return self.project_out((attn.to(v.dtype) @ v.flatten(-2)).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated depth-wise feed-forward network with exact-erf GELU; hidden = int(C·expansion), truncated."""

    def __init__(self, channels: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class Downsample(nn.Module):
    """conv3×3 C → C/2, then PixelUnshuffle(2): 2C channels at half resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """conv3×3 C → 2C, then PixelShuffle(2): C/2 channels at double resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PatchEmbed(nn.Module):
    """3×3 conv stem (``patch_embed.proj``, never biased in the official nets)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
