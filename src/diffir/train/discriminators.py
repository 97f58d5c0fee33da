"""Discriminators: the spectral-norm U-Net (SR GAN stages) and the N-layer PatchGAN (LaMa inpainting).

Both return ``(logits, features)`` so the trainer treats them alike; ``features`` (intermediate activations) feed
the inpainting feature-matching loss.  Sub-module names follow the upstream ones (``conv0``…``conv9``,
``model0``…``model5``) so pretrained discriminators from those projects load by key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from diffir.train.config import DiscriminatorSection


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel real/fake logits from a U-Net: three stride-2 4×4 SN convs down to 8·F channels, three
    bilinear-×2 + 3×3 SN conv stages back up with additive skips, two 3×3 SN convs, a final 3×3 conv to 1 channel;
    LeakyReLU(0.2) everywhere (Real-ESRGAN's design)."""

    def __init__(self, in_channels: int = 3, num_feat: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        f = num_feat
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        act = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))
        if self.skip_connection:
            x6 = x6 + x0
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out), [x0, x1, x2, x3, x4, x5, x6]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4×4 convs with padding 2 — one stride-2 conv + LReLU, (n_layers−1) stride-2 conv+BN+LReLU
    doubling the width (cap 512), one stride-1 conv+BN+LReLU, a stride-1 conv to 1 channel."""

    def __init__(self, in_channels: int = 3, num_feat: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2, True)  # noqa: E731
        blocks: list[nn.Sequential] = [nn.Sequential(nn.Conv2d(in_channels, num_feat, 4, 2, 2), act())]
        nf = num_feat
        for _ in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            blocks.append(nn.Sequential(nn.Conv2d(prev, nf, 4, 2, 2), nn.BatchNorm2d(nf), act()))
        prev, nf = nf, min(nf * 2, 512)
        blocks.append(nn.Sequential(nn.Conv2d(prev, nf, 4, 1, 2), nn.BatchNorm2d(nf), act()))
        blocks.append(nn.Sequential(nn.Conv2d(nf, 1, 4, 1, 2)))
        self.n_blocks = len(blocks)
        for i, block in enumerate(blocks):
            self.add_module(f"model{i}", block)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for i in range(self.n_blocks):
            x = getattr(self, f"model{i}")(x)
            feats.append(x)
        return feats[-1], feats[:-1]


def build_discriminator(section: DiscriminatorSection, in_channels: int = 3) -> nn.Module:
    if section.type == "unet_sn":
        return UNetDiscriminatorSN(in_channels, section.num_feat, section.skip_connection)
    return NLayerDiscriminator(in_channels, section.num_feat, section.n_layers)
