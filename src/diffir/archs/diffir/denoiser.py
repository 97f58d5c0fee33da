"""The IPR denoiser: a small MLP predicting x0 from (condition, timestep, x_t)."""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.diffir.config import IPR_DIM


class _MLPBlock(nn.Module):
    """Linear + LeakyReLU(0.1).  Named "ResMLP" upstream but it has no skip connection (kept that way)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class IPRDenoiser(nn.Module):
    def __init__(self, n_denoise_res: int, timesteps: int) -> None:
        super().__init__()
        self.max_period = timesteps * 10
        self.resmlp = nn.Sequential(
            nn.Linear(IPR_DIM * 2 + 1, IPR_DIM),
            nn.LeakyReLU(0.1, inplace=True),
            *[_MLPBlock(IPR_DIM) for _ in range(n_denoise_res)],
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # The timestep feature is t/(10·T) computed in float32 (as upstream, even in a float64 model), and is
        # placed between the condition and x_t.
        t_feat = (t.to(torch.float32) / self.max_period).view(-1, 1).to(x.dtype)
        return self.resmlp(torch.cat([cond, t_feat, x], dim=1))
