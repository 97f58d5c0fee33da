"""HI-Diff's restoration network ``G``: a Restormer U-Net that integrates the prior tokens at every level.

* Levels with ``group > 1`` (encoder 1-3, decoder 3-1, refinement) start with a HIM: cross-attention from every
  pixel to the prior tokens (N at full resolution, N//4 at levels 2/3); their blocks then see no prior.
* The latent level (group 1) has no HIM; each block modulates its normalised input, in attention and in the
  FFN, by a channel scale and shift computed from the pooled prior (B, C').
* ``down_1`` / ``down_2`` derive the coarser priors: tokens N → N//4 → 1, each followed by a C'→C' Linear.

Module names are the official state_dict keys (``encoder_level1.blocks.0.attn.qkv.weight``, ``latent.blocks.0
.attn.ln1.weight``, ``encoder_level1.him.kv.weight``, ``down_1.1.weight`` ...), registered in official order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.hidiff.config import HIDiffConfig
from diffir.nn.restormer import (
    GDFN,
    MDTA,
    Affine,
    Downsample,
    LayerNorm,
    PatchEmbed,
    RestormerBlock,
    Upsample,
    add_residual,
    to_map,
    to_tokens,
)
from diffir.runtime.execution import fast_path


class TokenTranspose(nn.Module):
    """(B, N, C) ↔ (B, C, N): lets a Linear act over the token axis (parameter-free ``down_*.0`` / ``.2``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


def prior_downsampler(tokens_in: int, tokens_out: int, width: int) -> nn.Sequential:
    """Linear over tokens (tokens_in → tokens_out), then Linear over channels; no activation."""
    return nn.Sequential(TokenTranspose(), nn.Linear(tokens_in, tokens_out), TokenTranspose(), nn.Linear(width, width))


class HIM(nn.Module):
    """Hierarchical Integration Module: x + proj(softmax(q(LN x)·k(LN p)ᵀ·scale)·v(LN p)), heads split
    head-major over channels, attention over the prior tokens; no FFN."""

    def __init__(self, channels: int, prior_width: int, num_heads: int, bias: bool, layernorm: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.norm1 = LayerNorm(channels, layernorm, dim=-1)
        self.norm2 = LayerNorm(prior_width, layernorm, dim=-1)
        self.q = nn.Linear(channels, channels, bias=bias)
        self.kv = nn.Linear(prior_width, channels * 2, bias=bias)
        self.proj = nn.Linear(channels, channels)  # always biased

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self.forward_fast(x, prior)
        b, c, h, w = x.shape
        heads = self.num_heads
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        q = self.q(self.norm1(tokens)).reshape(b, h * w, heads, c // heads).transpose(1, 2)
        kv = self.kv(self.norm2(prior)).reshape(b, prior.shape[1], 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ kv[0].transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, heads, HW, N)
        out = self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)

    def forward_fast(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The same on the channels-last token view, with fused attention (no (HW × N) matrix kept)."""
        b, c, h, w = x.shape
        heads = self.num_heads
        tokens = to_tokens(x)
        q = self.q(self.norm1.tokens(tokens)).view(b, h * w, heads, c // heads).transpose(1, 2)
        kv = self.kv(self.norm2.tokens(prior)).view(b, prior.shape[1], 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=self.scale)  # (B, heads, HW, C/heads)
        return to_map(add_residual(self.proj(out.transpose(1, 2).reshape(b, h * w, c)), tokens), h, w)


class ModulatedAttention(MDTA):
    """MDTA whose normalised input is first modulated by the pooled prior, x·ln1(p) + ln2(p) (no "1 +": the
    official weights learn it; ``attn.ln1``/``ln2`` are registered after the convolutions, as officially)."""

    def __init__(self, channels: int, num_heads: int, bias: bool, prior_width: int) -> None:
        super().__init__(channels, num_heads, bias)
        self.ln1 = nn.Linear(prior_width, channels)
        self.ln2 = nn.Linear(prior_width, channels)

    def modulation(self, prior: torch.Tensor | None) -> Affine:
        return self.ln1(prior), self.ln2(prior)


class ModulatedFeedForward(GDFN):
    """GDFN whose input is first modulated by the pooled prior (``ffn.ln1``/``ln2``, after the convs)."""

    def __init__(self, channels: int, hidden: int, bias: bool, prior_width: int) -> None:
        super().__init__(channels, hidden, bias)
        self.ln1 = nn.Linear(prior_width, channels)
        self.ln2 = nn.Linear(prior_width, channels)

    def modulation(self, prior: torch.Tensor | None) -> Affine:
        return self.ln1(prior), self.ln2(prior)


def transformer_block(channels: int, num_heads: int, hidden: int, bias: bool, layernorm: str,
                      prior_width: int | None = None) -> RestormerBlock:
    """Restormer block; with ``prior_width`` its attention and FFN are modulated by a (B, C') prior."""
    if prior_width is None:
        return RestormerBlock(channels, layernorm, MDTA(channels, num_heads, bias), GDFN(channels, hidden, bias))
    return RestormerBlock(channels, layernorm, ModulatedAttention(channels, num_heads, bias, prior_width),
                          ModulatedFeedForward(channels, hidden, bias, prior_width))


class BasicLayer(nn.Module):
    """One U-Net stage: ``blocks`` and, when ``group > 1``, a leading ``him`` (registered after the blocks)."""

    def __init__(self, config: HIDiffConfig, channels: int, num_heads: int, depth: int, group: int) -> None:
        super().__init__()
        c = config
        modulated = c.token_width if group == 1 else None
        self.blocks = nn.ModuleList(
            transformer_block(channels, num_heads, c.ffn_hidden(channels), c.bias, c.layernorm, modulated)
            for _ in range(depth)
        )
        self.him = HIM(channels, c.token_width, num_heads, c.bias, c.layernorm) if group > 1 else None

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        block_prior: torch.Tensor | None = prior
        if self.him is not None:
            x, block_prior = self.him(x, prior), None  # the blocks after a HIM get no prior
        for block in self.blocks:
            x = block(x, block_prior)
        return x


class HIDiffTransformer(nn.Module):
    """The official ``Transformer`` (registry name) for deblurring: output = conv(features) + input."""

    def __init__(self, config: HIDiffConfig) -> None:
        super().__init__()
        self.config = c = config
        d1, d2, d3, d4 = c.level_dims
        n, g = c.num_tokens, c.group

        def layer(width: int, heads: int, depth: int, group: int) -> BasicLayer:
            return BasicLayer(c, width, heads, depth, group)

        self.down_1 = prior_downsampler(n, n // 4, c.token_width)
        self.down_2 = prior_downsampler(n // 4, 1, c.token_width)
        self.patch_embed = PatchEmbed(c.in_channels, d1)
        self.encoder_level1 = layer(d1, c.heads[0], c.num_blocks[0], g)
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = layer(d2, c.heads[1], c.num_blocks[1], g // 2)
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = layer(d3, c.heads[2], c.num_blocks[2], g // 2)
        self.down3_4 = Downsample(d3)
        self.latent = layer(d4, c.heads[3], c.num_blocks[3], 1)
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, 1, bias=c.bias)
        self.decoder_level3 = layer(d3, c.heads[2], c.num_blocks[2], g // 2)
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, 1, bias=c.bias)
        self.decoder_level2 = layer(d2, c.heads[1], c.num_blocks[1], g // 2)
        self.up2_1 = Upsample(d2)
        # Level 1 of the decoder and the refinement work at 2·dim (no reduction after the last skip concat).
        self.decoder_level1 = layer(d2, c.heads[0], c.num_blocks[0], g)
        self.refinement = layer(d2, c.heads[0], c.num_refinement_blocks, g)
        if c.dual_pixel:
            self.skip_conv = nn.Conv2d(d1, d2, 1, bias=c.bias)
        self.output = nn.Conv2d(d2, c.out_channels, 3, padding=1, bias=c.bias)

    def priors(self, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prior_1, prior_2, prior_3): (B, N, C'), (B, N//4, C'), (B, C')."""
        prior_2 = self.down_1(prior)
        return prior, prior_2, self.down_2(prior_2).flatten(1)

    def features(self, lq: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net and refinement up to the output conv: (level-1 features at 2·dim, patch embedding)."""
        p1, p2, p3 = self.priors(prior)
        emb = self.patch_embed(lq)
        enc1 = self.encoder_level1(emb, p1)
        enc2 = self.encoder_level2(self.down1_2(enc1), p2)
        enc3 = self.encoder_level3(self.down2_3(enc2), p2)
        x = self.latent(self.down3_4(enc3), p3)
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(x), enc3], 1)), p2)
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), enc2], 1)), p2)
        x = self.decoder_level1(torch.cat([self.up2_1(x), enc1], 1), p1)
        return self.refinement(x, p1), emb

    def forward(self, lq: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        x, emb = self.features(lq, prior)
        if self.config.dual_pixel:
            return self.output(x + self.skip_conv(emb))
        return self.output(x) + lq
