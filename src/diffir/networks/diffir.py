"""DiffIR wrappers: stage 1 (CPEN_S1 sees the ground truth) and stage 2 (CPEN_S2 + IPR diffusion).

Forward semantics (same for every task):

* ``DiffIRS1(lq, gt) -> image``; ``return_ipr=True`` gives ``(image, ipr)``.
* ``DiffIRS2(lq) -> image`` in eval mode (samples the IPR from noise; pass ``generator`` for reproducibility).
* ``DiffIRS2(lq, ipr_s1) -> (image, [ipr after each reverse step])`` in train mode (joint optimisation through
  all T steps).
* Inpainting: ``lq`` is ``[image·(1−mask), mask]`` (4 channels, mask 1 = hole).
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.diffusion.sampler import IPRDiffusion
from diffir.networks.config import DiffIRConfig
from diffir.networks.cpen import CPEN, prior_lq_part, prior_s1_input
from diffir.networks.denoiser import IPRDenoiser
from diffir.networks.dirformer import DIRformer


class DiffIRModel(nn.Module):
    """Common base: holds the config and the DIRformer ``G``."""

    config: DiffIRConfig

    def __init__(self, config: DiffIRConfig) -> None:
        super().__init__()
        self.config = config
        self.G = DIRformer(config)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def size_multiple(self) -> int:
        return self.config.size_multiple

    def extra_repr(self) -> str:
        return f"task={self.config.task}, stage={self.config.stage}, scale={self.config.scale}"


class DiffIRS1(DiffIRModel):
    """Stage 1: ``E`` = CPEN_S1(LQ, GT) → IPR; ``G`` = DIRformer(LQ, IPR)."""

    def __init__(self, config: DiffIRConfig) -> None:
        if config.stage != 1:
            config = config.replace(stage=1)
        super().__init__(config)
        self.E = CPEN(config.cpen_s1_channels, config.n_encoder_res)

    def prior(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """IPR_S1 = CPEN_S1([LQ part, unshuffle4(GT)])."""
        return self.E(prior_s1_input(self.config, lq, gt))

    def forward(self, lq: torch.Tensor, gt: torch.Tensor, return_ipr: bool = False):
        ipr = self.prior(lq, gt)
        out = self.G(lq, ipr)
        return (out, ipr) if return_ipr else out


class DiffIRS2(DiffIRModel):
    """Stage 2: ``condition`` = CPEN_S2(LQ); ``denoise`` estimates the IPR in T reverse steps; ``G`` restores.

    Runtime switches for the paper's ablations (they do not change the weights):
    ``diffusion_enabled=False`` (V1: the CPEN_S2 output is the IPR) and ``diffusion.reverse_noise`` (V4).
    """

    def __init__(self, config: DiffIRConfig, diffusion_enabled: bool = True) -> None:
        if config.stage != 2:
            config = config.replace(stage=2)
        super().__init__(config)
        self.condition = CPEN(config.cpen_s2_channels, config.n_encoder_res)
        self.denoise = IPRDenoiser(config.n_denoise_res, config.timesteps)
        self.diffusion = IPRDiffusion(config.timesteps, config.linear_start, config.linear_end)
        self.diffusion_enabled = diffusion_enabled

    def condition_of(self, lq: torch.Tensor) -> torch.Tensor:
        """c = CPEN_S2(LQ part)."""
        return self.condition(prior_lq_part(self.config, lq))

    def estimate_ipr(
        self,
        lq: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample the IPR from noise given the LQ image (or a precomputed condition)."""
        if cond is None:
            if lq is None:
                raise ValueError("estimate_ipr needs lq or cond")
            # The official sampler draws x_T before running CPEN_S2; CPEN draws nothing, so order is free.
            cond = self.condition_of(lq)
        if not self.diffusion_enabled:
            return cond
        return self.diffusion.sample(self.denoise, cond, generator)

    def forward(
        self,
        lq: torch.Tensor,
        ipr_s1: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        ipr: torch.Tensor | None = None,
    ):
        if ipr is not None:  # restore with a given IPR (tiling shares one IPR across tiles)
            return self.G(lq, ipr.to(lq.dtype))
        if self.training and ipr_s1 is not None:
            cond = self.condition_of(lq)
            if self.diffusion_enabled:
                iprs = self.diffusion.train_chain(self.denoise, ipr_s1, cond, generator=generator)
            else:
                iprs = [cond]
            return self.G(lq, iprs[-1].to(lq.dtype)), iprs
        if self.training:
            raise ValueError("DiffIRS2 in train mode needs ipr_s1 (the stage-1 IPR); call model.eval() to sample")
        est = self.estimate_ipr(lq, generator=generator)
        return self.G(lq, est.to(lq.dtype))


def build_model(config: DiffIRConfig) -> DiffIRS1 | DiffIRS2:
    """The wrapper class that matches ``config.stage``."""
    return DiffIRS1(config) if config.stage == 1 else DiffIRS2(config)
