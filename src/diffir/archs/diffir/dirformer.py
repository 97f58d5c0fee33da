"""DIRformer: the Restormer-style U-Net transformer of DiffIR, modulated by the IPR in every block.

One body for every task; the task only changes the input stem and the output head:

=========  ==========================================  ==============================================
task       input                                         head
=========  ==========================================  ==============================================
sr ×4/2/1  LR, pixel-unshuffled by 1/2/4                ×4 sub-pixel tail + nearest-upsampled LR
deblur     blurry RGB                                    3×3 conv + input (residual)
inpaint    RGB·(1−mask) ⊕ mask (4 channels)              3×3 conv, no residual, no refinement stage
=========  ==========================================  ==============================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffir.archs.diffir.config import DiffIRConfig
from diffir.archs.diffir.layers import BlockStack, TransformerBlock
from diffir.nn.restormer import Downsample, PatchEmbed, Upsample


class SubPixelTail(nn.Sequential):
    """Always ×4: [conv → shuffle(2)] × 2, then conv to the output channels (all convs biased)."""

    def __init__(self, channels: int, out_channels: int) -> None:
        upsampler = nn.Sequential(
            nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2),
            nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2),
        )
        super().__init__(upsampler, nn.Conv2d(channels, out_channels, 3, padding=1))


class DIRformer(nn.Module):
    def __init__(self, config: DiffIRConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        d1, d2, d3, d4 = c.level_dims

        def stack(width: int, n: int, heads: int) -> BlockStack:
            return BlockStack(
                TransformerBlock(width, heads, c.ffn_hidden(width), c.bias, c.layernorm) for _ in range(n)
            )

        self.pixel_unshuffle = nn.PixelUnshuffle(c.unshuffle) if c.unshuffle > 1 else nn.Identity()
        self.patch_embed = PatchEmbed(c.embed_channels, d1)
        self.encoder_level1 = stack(d1, c.num_blocks[0], c.heads[0])
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = stack(d2, c.num_blocks[1], c.heads[1])
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = stack(d3, c.num_blocks[2], c.heads[2])
        self.down3_4 = Downsample(d3)
        self.latent = stack(d4, c.num_blocks[3], c.heads[3])
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, 1, bias=c.bias)
        self.decoder_level3 = stack(d3, c.num_blocks[2], c.heads[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, 1, bias=c.bias)
        self.decoder_level2 = stack(d2, c.num_blocks[1], c.heads[1])
        self.up2_1 = Upsample(d2)
        # Level 1 of the decoder works at 2·dim (no channel reduction after the last skip concat).
        self.decoder_level1 = stack(d2, c.num_blocks[0], c.heads[0])
        if c.refinement:
            self.refinement = stack(d2, c.num_refinement_blocks, c.heads[0])
        if c.dual_pixel:
            self.skip_conv = nn.Conv2d(d1, d2, 1, bias=c.bias)
        if c.task == "sr":
            self.tail = SubPixelTail(d2, c.out_channels)
        else:
            self.output = nn.Conv2d(d2, c.out_channels, 3, padding=1, bias=c.bias)

    def forward(self, lq: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        return self.head(lq, *self.features(lq, ipr))

    def features(self, lq: torch.Tensor, ipr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The U-Net (and refinement) up to the task head: (level-1 features at 2·dim, patch embedding)."""
        c = self.config
        emb = self.patch_embed(self.pixel_unshuffle(lq))
        enc1 = self.encoder_level1(emb, ipr)
        enc2 = self.encoder_level2(self.down1_2(enc1), ipr)
        enc3 = self.encoder_level3(self.down2_3(enc2), ipr)
        x = self.latent(self.down3_4(enc3), ipr)
        x = self.reduce_chan_level3(torch.cat([self.up4_3(x), enc3], 1))
        x = self.decoder_level3(x, ipr)
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), enc2], 1))
        x = self.decoder_level2(x, ipr)
        x = self.decoder_level1(torch.cat([self.up2_1(x), enc1], 1), ipr)
        if c.refinement:
            x = self.refinement(x, ipr)
        return x, emb

    def head(self, lq: torch.Tensor, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Task head and global residual (SR: ×4 tail + nearest LR; deblur: conv + input; inpaint: conv)."""
        c = self.config
        if c.task == "sr":
            residual = lq if c.scale == 1 else F.interpolate(lq, scale_factor=c.scale, mode="nearest")
            return self.tail(x) + residual
        if c.dual_pixel:
            return self.output(x + self.skip_conv(emb))
        out = self.output(x)
        return out + lq if c.task == "deblur" else out
