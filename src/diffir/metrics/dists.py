"""DISTS (Ding et al., 2020) with the official alpha/beta and a user-supplied VGG16 backbone.

Conventions (``DISTS_pytorch``): RGB in [0, 1], no resize; VGG16 with every max-pool replaced by an L2 pooling
(3×3 Hann window, stride 2); the raw image plus five ReLU stages (1475 channels) are compared with a
structure term (means) and a texture term (variances/covariance), c1 = c2 = 1e-6, weighted by alpha/beta
normalised to sum to one.  ``DISTS = 1 - similarity``; lower is better.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from diffir.bundled import asset_path
from diffir.metrics.backbones import VGG16_TAPS, load_features, vgg16_features
from diffir.metrics.weights import find_weights

__all__ = ["DISTS", "L2Pool"]

_CHANNELS = (3, 64, 128, 256, 512, 512)


class L2Pool(nn.Module):
    """sqrt(blur(x²)) with a normalised 3×3 Hann window, stride 2 (an anti-aliased replacement of max-pool)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(np.outer(a, a) / np.outer(a, a).sum(), dtype=torch.float32)
        self.register_buffer("filter", g.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter.to(x.dtype), stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """``DISTS(backbone=path)(x, y)`` → per-image distance, inputs NCHW RGB in [0, 1]."""

    def __init__(self, backbone: str | os.PathLike | None | bool = None) -> None:
        super().__init__()
        self.features = vgg16_features(pool=L2Pool)
        if backbone is not False:
            load_features(self.features, find_weights("vgg16", backbone or None, metric="dists"), "vgg16")
        ab = load_file(str(asset_path("dists_alpha_beta.safetensors")))
        self.register_buffer("alpha", ab["alpha"])
        self.register_buffer("beta", ab["beta"])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [x], (x - self.mean) / self.std
        for i, layer in enumerate(self.features[: VGG16_TAPS[-1] + 1]):
            h = layer(h)
            if i in VGG16_TAPS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c1 = c2 = 1e-6
        total_w = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total_w, _CHANNELS, dim=1)
        betas = torch.split(self.beta / total_w, _CHANNELS, dim=1)
        structure = texture = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for fx, fy, a, b in zip(self._stages(x), self._stages(y), alphas, betas, strict=True):
            mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
            vx = ((fx - mx) ** 2).mean((2, 3), keepdim=True)
            vy = ((fy - my) ** 2).mean((2, 3), keepdim=True)
            cov = (fx * fy).mean((2, 3), keepdim=True) - mx * my
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            s2 = (2 * cov + c2) / (vx + vy + c2)
            structure = structure + (a * s1).sum((1, 2, 3))
            texture = texture + (b * s2).sum((1, 2, 3))
        return 1 - (structure + texture)
