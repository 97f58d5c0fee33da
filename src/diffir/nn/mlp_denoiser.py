"""The MLP denoiser shared by DiffIR (its IPR denoiser) and HI-Diff (``simple_denoise``).

Linear(2·W+1 → W) + LeakyReLU(0.1), then ``blocks`` × [Linear(W → W) + LeakyReLU(0.1)], on the concatenation
[condition, t/(10·timesteps), x_t] along the last axis.  Keys ``resmlp.0.*`` and ``resmlp.{2,3,…}.resmlp.0.*``.
"""

from __future__ import annotations

import torch
from torch import nn


class _LinearLReLU(nn.Module):
    """Linear + LeakyReLU(0.1).  Named "ResMLP" upstream but it has no skip connection (kept that way)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.1, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class MLPDenoiser(nn.Module):
    """Predicts x0 from (x_t, t, condition); x and the condition are (..., W), t is x's shape without W."""

    def __init__(self, width: int, blocks: int, timesteps: int) -> None:
        super().__init__()
        # The time divisor is the constructor's ``timesteps`` (DiffIR: its T; HI-Diff: a default 5 that no option
        # file sets, so 50 whatever the diffusion's T).
        self.max_period = timesteps * 10
        self.resmlp = nn.Sequential(
            nn.Linear(width * 2 + 1, width),
            nn.LeakyReLU(0.1, inplace=True),
            *[_LinearLReLU(width) for _ in range(blocks)],
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # t/(10·timesteps) computed in float32 (as upstream, even in a float64 model), between the condition and x_t
        t_feat = (t.to(torch.float32) / self.max_period).unsqueeze(-1).to(x.dtype)
        return self.resmlp(torch.cat([cond, t_feat, x], dim=-1))
