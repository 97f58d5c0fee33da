"""Additive Gaussian and Poisson (shot) noise, per-image parameters, optionally grey (same on all channels)."""

from __future__ import annotations

import torch

_GRAY = (0.299, 0.587, 0.114)


def _per_image(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def gaussian_noise(
    x: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """x + N(0, σ²) with σ per image on the [0, 1] scale; grey images share one noise map across channels."""
    colour = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    mono = torch.randn((x.shape[0], 1, *x.shape[2:]), generator=generator, device=x.device, dtype=x.dtype)
    noise = torch.where(_per_image(gray, x).bool(), mono.expand_as(x), colour)
    return x + noise * _per_image(sigma, x)


def _levels(q: torch.Tensor) -> torch.Tensor:
    """Per image 2^ceil(log2(number of distinct 8-bit levels)): the photon-count scale of the image."""
    idx = q.reshape(q.shape[0], -1).long().clamp(0, 255)
    hist = torch.zeros(q.shape[0], 256, device=q.device, dtype=torch.bool)
    hist.scatter_(1, idx, True)
    count = hist.sum(1).clamp(min=1).to(q.dtype)
    return torch.exp2(torch.ceil(torch.log2(count)))


def _shot(img: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    q = torch.round(img.clamp(0, 1) * 255)
    img8 = q / 255
    vals = _levels(q).view(-1, 1, 1, 1)
    return torch.poisson(img8 * vals, generator=generator) / vals - img8


def poisson_noise(
    x: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """x + scale·(Poisson(v·x)/v − x), v from the number of grey levels (Real-ESRGAN's Poisson model)."""
    colour = _shot(x, generator)
    lum = (x * torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    mono = _shot(lum, generator)
    noise = torch.where(_per_image(gray, x).bool(), mono.expand_as(x), colour)
    return x + noise * _per_image(scale, x)
