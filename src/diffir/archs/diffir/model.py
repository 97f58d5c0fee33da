"""DiffIR wrappers: stage 1 (CPEN_S1 sees the ground truth) and stage 2 (CPEN_S2 + IPR diffusion).

Both implement :class:`diffir.archs.base.RestorationModel` (the prior is DiffIR's 256-d IPR):

* ``DiffIRS1(lq, gt) -> image``; ``return_ipr=True`` gives ``(image, ipr)``; ``prior(lq, gt)`` = IPR_S1.
* ``DiffIRS2(lq) -> image`` in eval mode = ``restore(lq, sample_prior(condition_of(lq), generator))``.
* ``DiffIRS2(lq, ipr_s1) -> (image, [ipr after each reverse step])`` in train mode (joint optimisation through
  all T steps).
* Inpainting: ``lq`` is ``[image·(1−mask), mask]`` (4 channels, mask 1 = hole).
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.base import PooledEncoder
from diffir.archs.common import PriorModel
from diffir.archs.diffir.config import IPR_DIM, DiffIRConfig
from diffir.archs.diffir.cpen import CPEN, prior_lq_part, prior_s1_input
from diffir.archs.diffir.dirformer import DIRformer
from diffir.diffusion.sampler import IPRDiffusion
from diffir.nn.mlp_denoiser import MLPDenoiser


class DiffIRModel(PriorModel):
    """Common base: holds the config and the DIRformer ``G``."""

    architecture = "diffir"
    config: DiffIRConfig
    #: Labels of the top-level parts (``diffir info``).
    part_names = {"G": "DIRformer", "E": "CPEN_S1", "condition": "CPEN_S2", "denoise": "denoiser"}

    def __init__(self, config: DiffIRConfig) -> None:
        super().__init__(config)
        self.G = DIRformer(self.config)

    @property
    def prior_shape(self) -> tuple[int, ...]:
        return (IPR_DIM,)

    def extra_repr(self) -> str:
        return f"task={self.config.task}, stage={self.config.stage}, scale={self.config.scale}"


class DiffIRS1(DiffIRModel):
    """Stage 1: ``E`` = CPEN_S1(LQ, GT) → IPR; ``G`` = DIRformer(LQ, IPR)."""

    STAGE = 1

    def __init__(self, config: DiffIRConfig) -> None:
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

    The paper's ablation variants are config fields, so a saved model restores as it was trained:
    ``prior_diffusion=False`` (V1: the CPEN_S2 output is the IPR) and ``reverse_noise=True`` (V4).
    """

    STAGE = 2

    def __init__(self, config: DiffIRConfig) -> None:
        super().__init__(config)
        self.condition = CPEN(config.cpen_s2_channels, config.n_encoder_res)
        self.denoise = MLPDenoiser(IPR_DIM, config.n_denoise_res, config.timesteps)
        self.diffusion = IPRDiffusion(config.timesteps, config.linear_start, config.linear_end,
                                      reverse_noise=config.reverse_noise)

    @property
    def diffusion_enabled(self) -> bool:
        return self.config.prior_diffusion

    def condition_of(self, lq: torch.Tensor) -> torch.Tensor:
        """c = CPEN_S2(LQ part)."""
        return self.condition(prior_lq_part(self.config, lq))

    def condition_encoder(self) -> PooledEncoder:
        cpen = self.condition
        return PooledEncoder(
            prepare=lambda lq: prior_lq_part(self.config, lq), features=cpen.E[:-1], pool_size=(1, 1),
            head=lambda pooled: cpen.mlp(pooled.flatten(1)),
        )

    def sample_prior(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample the IPR from noise given the condition (the official sampler draws x_T before running
        CPEN_S2; CPEN draws nothing, so the order is free)."""
        if not self.diffusion_enabled:
            return cond
        return self.diffusion.sample(self.denoise, cond, generator)

    def train_chain(self, ipr_s1: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Training: the IPRs after each reverse step from the diffused IPR_S1 (V1: just the condition)."""
        if not self.diffusion_enabled:
            return [cond]
        return self.diffusion.train_chain(self.denoise, ipr_s1, cond, noise, generator)

    # ------------------------------------------------------------------------------------------- training
    def prior_parameters(self) -> list[nn.Parameter]:
        """CPEN_S2 + denoiser (the S2 warm-up optimiser's parameters, in the official order)."""
        return [p for n, p in self.named_parameters() if "denoise" in n or "condition" in n]

    def init_from_stage1(self, teacher: DiffIRS1) -> None:
        """Official S2 initialisation: the DIRformer from S1; CPEN_S2 and the denoiser start fresh."""
        self.G.load_state_dict(teacher.G.state_dict())

    def set_ablation(self, enabled: bool = True, reverse_noise: bool = False, optimization: str = "joint") -> None:
        """The paper's ablation switches (Tab. 4): V1 no diffusion, V2 traditional, V4 noise in reverse steps.
        V1 and V4 change inference, so they go into the config (and with it into every file saved); V2 changes only
        the training objective (:meth:`traditional_targets`)."""
        self.config = self.config.replace(prior_diffusion=enabled, reverse_noise=reverse_noise)
        self.diffusion.reverse_noise = reverse_noise

    def traditional_targets(self, ipr_s1: torch.Tensor, cond: torch.Tensor,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ablation V2: (the denoiser's x0 prediction at a random t — trained against IPR_S1 —, the IPR from the
        detached reverse chain that drives the DIRformer)."""
        t = torch.randint(0, self.diffusion.timesteps, (ipr_s1.shape[0],), generator=generator).to(ipr_s1.device)
        noise = torch.randn(ipr_s1.shape, generator=generator).to(ipr_s1.device, ipr_s1.dtype)
        x0 = self.denoise(self.diffusion.q_sample(ipr_s1, t, noise), t, cond)
        with torch.no_grad():
            ipr = self.diffusion.train_chain(self.denoise, ipr_s1, cond, generator=generator)[-1]
        return x0, ipr

    def forward(self, lq: torch.Tensor, ipr_s1: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        if self.training and ipr_s1 is not None:
            cond = self.condition_of(lq)
            iprs = self.train_chain(ipr_s1, cond, generator=generator)
            return self.restore(lq, iprs[-1]), iprs
        if self.training:
            raise ValueError("DiffIRS2 in train mode needs ipr_s1 (the stage-1 IPR); call model.eval() to sample")
        return self.restore(lq, self.sample_prior(self.condition_of(lq), generator))


def build_model(config: DiffIRConfig) -> DiffIRS1 | DiffIRS2:
    """The wrapper class that matches ``config.stage``."""
    return DiffIRS1(config) if config.stage == 1 else DiffIRS2(config)
