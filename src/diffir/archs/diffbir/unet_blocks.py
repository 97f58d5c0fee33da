"""Building blocks of the Stable Diffusion 2.x UNet (and of DiffBIR's IRControlNet, which copies its encoder).

Attribute names and registration order reproduce the LDM state_dict layout (``in_layers.0``, ``emb_layers.1``,
``out_layers.3``, ``transformer_blocks.0.attn1.to_q`` ...), so checkpoints load without renaming.  Registration
order matters only for the order of ``state_dict()`` keys, e.g. a transformer block registers attn1, ff, attn2,
then its three norms, as the official class does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: ResBlocks and the UNet ``out`` norm use eps 1e-5; the SpatialTransformer input norm uses 1e-6 (README §7.4).
RESBLOCK_NORM_EPS = 1e-5
TRANSFORMER_NORM_EPS = 1e-6
NORM_GROUPS = 32


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos ‖ sin] of (B,) timesteps, (B, dim) float32; an odd ``dim`` gets a zero column."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype: the official fp16/bf16 mode keeps these norms
    in float32 because half-precision statistics over large groups lose too much accuracy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def resblock_norm(channels: int) -> GroupNorm32:
    return GroupNorm32(NORM_GROUPS, channels, eps=RESBLOCK_NORM_EPS)


class EmbedSequential(nn.Sequential):
    """A Sequential whose ResBlocks also receive the timestep embedding and whose transformers the context
    (the official ``TimestepEmbedSequential``; its children are numbered ``input_blocks.i.0``, ``.1`` ...)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class ResBlock(nn.Module):
    """GN-SiLU-conv, + Linear(SiLU(emb)) (no scale-shift), GN-SiLU-(dropout)-conv, plus the skip (identity or
    a 1×1 conv when the width changes)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(resblock_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, 1, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 is the (inference-inert) dropout, kept so that the output conv is ``out_layers.3`` as in SD.
        self.out_layers = nn.Sequential(resblock_norm(out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, 1, 1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """3×3 stride-2 conv with padding 1 (the VAE's asymmetric padding is not used in the UNet)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CrossAttention(nn.Module):
    """Multi-head attention; keys/values come from ``context`` (width ``context_dim``) or from the input itself.
    q, k and v have no bias; the output projection (``to_out.0``) has one."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        kv_dim = context_dim if context_dim is not None else query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (self._split_heads(p) for p in (self.to_q(x), self.to_k(context), self.to_v(context)))
        # SDPA's default scale is head_dim^-1/2, the official one; the references were made with SDPA too.
        out = F.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)


class GEGLU(nn.Module):
    """Linear to 2·inner; the first half times exact GELU of the second half."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4× wide: ``net.0.proj``, (dropout), ``net.2``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention on the context, GEGLU feed-forward; each with a residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, head_dim)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, head_dim, context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GN (eps 1e-6), projection in, transformer blocks over the (h w) tokens, projection out, plus the input.

    ``linear=True`` (SD 2.x) projects the tokens with Linear layers after flattening; ``linear=False`` (SD 1.x)
    uses 1×1 convs before flattening.  Both give the same maths; only the tensor ranks differ.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int, context_dim: int, linear: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.linear = linear
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, inner) if linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, head_dim, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        b, _, height, width = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.flatten(2).transpose(1, 2)  # (B, H·W, C), row-major tokens
        if self.linear:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).reshape(b, -1, height, width)
        if not self.linear:
            h = self.proj_out(h)
        return h + x
