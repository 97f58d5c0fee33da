"""DiffBIR's first-order degradation model (DiffBIR supplement, Eq. 2).

    LQ = { [ (HQ ⊗ k_σ)↓r + n_δ ]_JPEG_q }↑r

σ ~ U[0.1, 12] (isotropic Gaussian blur), r ~ U[1, 12] (downsampling), δ ~ U[0, 15] (Gaussian noise σ on
the 0–255 scale), q ~ U[30, 100] (JPEG quality).  The paper resizes back to the HQ size (``scale=1``); with
``scale=s`` the last resize goes to HQ/s instead, which gives SR training pairs with the same degradation.

σ, δ and q are drawn per image.  r is drawn once per batch because it sets the tensor shape (the
Real-ESRGAN pipeline does the same with its resize factors).  The blur is applied separably: a σ = 12
Gaussian needs a ~73-tap kernel, which is cheap as two 1-D passes and costly as one 2-D convolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffir.data import rng
from diffir.data.degradations.base import Degradation
from diffir.data.jpeg import jpeg_roundtrip
from diffir.data.noise import gaussian_noise
from diffir.data.resize import resize, scaled_size


def separable_gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each image of (B, C, H, W) with its own isotropic Gaussian (σ per image), taps ±``radius``."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(device=x.device, dtype=x.dtype)[:, None]
    k1d = torch.exp(-0.5 * (t[None] / s) ** 2)
    k1d = (k1d / k1d.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, taps)
    mode = "reflect" if radius < h and radius < w else "replicate"
    y = F.pad(x, (radius, radius, radius, radius), mode=mode).reshape(1, b * c, h + 2 * radius, w + 2 * radius)
    y = F.conv2d(y, k1d[:, None, None, :], groups=b * c)  # along W
    y = F.conv2d(y, k1d[:, None, :, None], groups=b * c)  # along H
    return y.reshape(b, c, h, w)


class DiffBIRDegradation(Degradation):
    """``deg(gt) -> {"lq", "gt"}`` with LQ of size (H/scale, W/scale); every range is an option."""

    def __init__(
        self,
        scale: int = 1,
        sigma_range: Sequence[float] = (0.1, 12.0),
        downsample_range: Sequence[float] = (1.0, 12.0),
        noise_range: Sequence[float] = (0.0, 15.0),
        jpeg_range: Sequence[float] = (30, 100),
        resize_mode: str = "bilinear",
        blur_radius: int | None = None,
        quantize: bool = True,
    ):
        super().__init__()
        self.scale = int(scale)
        self.sigma_range = tuple(sigma_range)
        self.downsample_range = tuple(downsample_range)
        self.noise_range = tuple(noise_range)
        self.jpeg_range = tuple(jpeg_range)
        self.resize_mode = resize_mode
        # 3σ covers 99.7% of the Gaussian's mass; larger radii only cost time.
        self.blur_radius = blur_radius if blur_radius is not None else math.ceil(3 * self.sigma_range[1])
        self.quantize = quantize

    @torch.no_grad()
    def forward(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(gt)
        gen = rng.param_generator(generator)
        dev_gen = rng.device_generator(gen, gt.device)
        b, _, h, w = gt.shape
        sigma = rng.uniform(gen, *self.sigma_range, b)
        r = float(rng.uniform(gen, *self.downsample_range, 1).item())
        delta = rng.uniform(gen, *self.noise_range, b) / 255
        quality = rng.uniform(gen, *self.jpeg_range, b)

        x = separable_gaussian_blur(gt, sigma, self.blur_radius)
        x = resize(x, scaled_size(h, w, 1.0 / r), self.resize_mode)
        x = gaussian_noise(x, delta, torch.zeros(b, dtype=torch.bool, device="cpu"), dev_gen).clamp(0, 1)
        x = jpeg_roundtrip(x, quality)
        x = resize(x, (h // self.scale, w // self.scale), self.resize_mode).clamp(0, 1)
        if self.quantize:
            x = torch.round(x * 255) / 255
        return {"lq": x.contiguous(), "gt": gt}
