"""DiffBIR's wavelet colour fix (spec §B.1 step 4, parity README §7.5): keep the sample's high frequencies and
take the low frequencies of the stage-1 output, which removes the colour shifts of latent diffusion."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LEVELS = 5


def wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-channel 3×3 [1,2,1]ᵀ[1,2,1]/16 blur with dilation ``radius`` and replicate padding ``radius``."""
    channels = image.shape[1]
    taps = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]],
                        dtype=image.dtype, device=image.device)
    kernel = taps[None, None].repeat(channels, 1, 1, 1)
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def wavelet_decomposition(image: torch.Tensor, levels: int = LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ of the ``levels`` band-pass details, the last low-pass), blurring with dilation 2^i at level i."""
    high = torch.zeros_like(image)
    low = image
    for i in range(levels):
        low = wavelet_blur(image, 2**i)
        high = high + (image - low)
        image = low
    return high, low


def wavelet_reconstruction(content: torch.Tensor, style: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """High frequencies of ``content`` (the decoded sample in [0,1]) + low frequencies of ``style`` (the stage-1
    output in [0,1]); both (N,C,H,W) of the same size."""
    if content.shape != style.shape:
        raise ValueError(f"colour fix needs equal shapes, got {tuple(content.shape)} and {tuple(style.shape)}")
    high, _ = wavelet_decomposition(content, levels)
    _, low = wavelet_decomposition(style, levels)
    return high + low
