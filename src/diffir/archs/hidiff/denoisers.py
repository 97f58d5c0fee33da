"""HI-Diff's denoising networks on prior tokens (B, N, C'), with their official call ``net(x, c, t_arg)``.

They differ in everything that does not show in a state_dict (pitfalls A.11.3-5):

====================  =================================  =====================================
                      ``denoising`` (GoPro)              ``simple_denoise`` (RealBlur)
====================  =================================  =====================================
output                ε̂ (through a final GELU)           x̂0
time argument         t+1, long, x's full shape,          t, long (B, N), divided by
                      times the scalar ``time_mlp``       10·``timesteps`` (default 5 → 50)
input concat order    [x, t, c]                           [c, t, x]
====================  =================================  =====================================

:func:`by_index` adapts either to the sampler's ``denoiser(x, t_index, cond)``.
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.hidiff.config import HIDiffConfig
from diffir.diffusion.sampler import Denoiser
from diffir.nn.mixer import MixerBlock
from diffir.nn.mlp_denoiser import MLPDenoiser

LAYERSCALE_INIT = 1e-3  # official initial value of ``time_mlp``


class MixerDenoiser(nn.Module):
    """Official ``denoising``: Linear → LReLU(0.2), (block_num−2) × [MLP-Mixer → GELU], Linear → GELU."""

    def __init__(self, config: HIDiffConfig) -> None:
        super().__init__()
        c = config
        width, inner = c.token_width, c.denoiser_inner_channels
        self.time_mlp = nn.Parameter(torch.full((1,), LAYERSCALE_INIT))
        self.first_layer = nn.Sequential(nn.Linear(width * 3, inner), nn.LeakyReLU(0.2, inplace=True))
        self.blocks = nn.Sequential(*[
            nn.Sequential(MixerBlock(c.num_tokens, inner, c.denoiser_patch_expansion, c.denoiser_channel_expansion),
                          nn.GELU())
            for _ in range(c.denoiser_block_num - 2)
        ])
        self.final_layer = nn.Sequential(nn.Linear(inner, width), nn.GELU())

    @staticmethod
    def time_argument(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The official time tensor for timestep indices t (B,): t+1 filled into x's shape, long."""
        return (t + 1).view(-1, *([1] * (x.dim() - 1))).expand(x.shape).to(torch.long)

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2:  # (B, N): repeated over channels, as upstream
            t = t.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        t = t * self.time_mlp
        return self.final_layer(self.blocks(self.first_layer(torch.cat([x, t.to(x.dtype), c], dim=-1))))


class SimpleDenoiser(MLPDenoiser):
    """Official ``simple_denoise`` (the same MLP as DiffIR's denoiser) with its official call ``net(x, c, t)``."""

    def __init__(self, config: HIDiffConfig) -> None:
        # Its own constructor argument (default 5), not the diffusion T: divisor 50 for T = 16 (pitfall A.11.3).
        super().__init__(config.token_width, config.denoiser_res_blocks, config.denoiser_timesteps)

    @staticmethod
    def time_argument(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The official time tensor for timestep indices t (B,): t filled into (B, N), long."""
        return t.view(-1, 1).expand(x.shape[:2]).to(torch.long)

    def forward(self, x: torch.Tensor, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, t, c)


def build_denoiser(config: HIDiffConfig) -> MixerDenoiser | SimpleDenoiser:
    return MixerDenoiser(config) if config.denoiser == "denoising" else SimpleDenoiser(config)


def by_index(net: MixerDenoiser | SimpleDenoiser) -> Denoiser:
    """``denoiser(x, t_index, cond)`` for the sampler, calling ``net`` with its official time argument."""

    def call(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return net(x, cond, net.time_argument(t, x))

    return call
