"""HI-Diff wrappers: stage 1 (``G`` + ``le``, the latent encoder sees the ground truth) and stage 2 (``G`` +
``le_dm`` + ``denoise``, the prior is sampled by a small diffusion conditioned on ``le_dm(LQ)``).

The state_dict prefixes map 1:1 to the official files: ``G.`` ↔ net_g, ``le.`` ↔ net_le, ``le_dm.`` ↔
net_le_dm, ``denoise.`` ↔ net_d.  The sampler (``diffusion``) holds only non-persistent schedule buffers.

* ``HIDiffS1(lq, gt) -> image``; ``return_prior=True`` gives ``(image, z)``; ``prior(lq, gt)`` = z (B, N, C').
* ``HIDiffS2(lq) -> image`` in eval mode = ``restore(lq, sample_prior(condition_of(lq), generator))``.
* ``HIDiffS2(lq, prior_s1) -> (image, [prior after each reverse step])`` in train mode (through all T steps).
"""

from __future__ import annotations

import torch
from torch import nn

from diffir.archs.base import PooledEncoder
from diffir.archs.common import PriorModel
from diffir.archs.hidiff.config import HIDiffConfig
from diffir.archs.hidiff.denoisers import build_denoiser, by_index
from diffir.archs.hidiff.encoder import LatentEncoder
from diffir.archs.hidiff.transformer import HIDiffTransformer
from diffir.diffusion.sampler import PriorDiffusion
from diffir.errors import ConfigError


def build_diffusion(config: HIDiffConfig) -> PriorDiffusion:
    """The sampler of the configured official code path (spec §A.6)."""
    eps = config.diffusion_path == "eps"
    return PriorDiffusion(
        config.timesteps, config.linear_start, config.linear_end,
        schedule=config.schedule,
        prediction="eps" if eps else "x0",
        clamp_x0=eps,  # GoPro: x̂0 clamped to [-1, 1]; LDM: clip_denoised=False
        draw_step_noise=not eps,  # the LDM p_sample draws (and discards) one normal per step; GoPro draws none
        train_start="alpha_bar" if eps else "q_sample",  # GoPro quirk: ᾱ_T where √ᾱ_T is expected
    )


class HIDiffModel(PriorModel):
    """Common base: holds the config and the restoration Transformer ``G``."""

    architecture = "hidiff"
    config: HIDiffConfig
    #: Labels of the top-level parts (``diffir info``).
    part_names = {"G": "Transformer", "le": "LE (stage 1)", "le_dm": "LE_DM", "denoise": "denoiser"}

    def __init__(self, config: HIDiffConfig) -> None:
        super().__init__(config)
        self.G = HIDiffTransformer(self.config)

    @property
    def prior_shape(self) -> tuple[int, ...]:
        return (self.config.num_tokens, self.config.token_width)

    def extra_repr(self) -> str:
        c = self.config
        return f"stage={c.stage}, encoder={c.encoder}, denoiser={c.denoiser}, T={c.timesteps}, path={c.diffusion_path}"


class HIDiffS1(HIDiffModel):
    """Stage 1: ``le`` = LE([GT, LQ]) → z; ``G`` = Transformer(LQ, z)."""

    STAGE = 1

    def __init__(self, config: HIDiffConfig) -> None:
        super().__init__(config)
        self.le = LatentEncoder(config, stage=1)

    def prior(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """z = LE([GT, LQ]) (GT first: pitfall A.11 item 6), (B, N, C')."""
        return self.le(torch.cat([gt, lq], dim=1))

    def forward(self, lq: torch.Tensor, gt: torch.Tensor, return_prior: bool = False):
        z = self.prior(lq, gt)
        out = self.G(lq, z)
        return (out, z) if return_prior else out


class HIDiffS2(HIDiffModel):
    """Stage 2: ``le_dm`` encodes the condition; ``denoise`` runs the T-step reverse chain; ``G`` restores."""

    STAGE = 2

    def __init__(self, config: HIDiffConfig) -> None:
        super().__init__(config)
        self.le_dm = LatentEncoder(config, stage=2)
        self.denoise = build_denoiser(config)
        self.diffusion = build_diffusion(config)  # buffers only, non-persistent: not in the state_dict

    def condition_of(self, lq: torch.Tensor) -> torch.Tensor:
        """c = LE_DM(LQ), (B, N, C'), computed once and reused at every reverse step."""
        return self.le_dm(lq)

    def condition_encoder(self) -> PooledEncoder:
        le = self.le_dm
        return PooledEncoder(prepare=le.prepare, features=le.feature_layers(), pool_size=(self.config.group,) * 2,
                             head=le.head)

    def sample_prior(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eval sampling from x_T ~ N(0, I) with the official RNG consumption (GoPro 1 draw, LDM 1+T)."""
        return self.diffusion.sample(by_index(self.denoise), cond, generator)

    def train_chain(self, prior_s1: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Training: the state after each of the T reverse steps (with gradient) from the diffused stage-1
        prior; the last one is the prior given to G."""
        return self.diffusion.train_chain(by_index(self.denoise), prior_s1, cond, noise, generator)

    def prior_parameters(self) -> list[nn.Parameter]:
        """LE_DM + denoiser: the networks stage 2 trains from scratch."""
        return [*self.le_dm.parameters(), *self.denoise.parameters()]

    def init_from_stage1(self, teacher: HIDiffS1) -> None:
        """Official S2 initialisation: G from stage 1 (then fine-tuned); LE_DM and the denoiser start fresh."""
        self.G.load_state_dict(teacher.G.state_dict())

    def set_ablation(self, enabled: bool = True, reverse_noise: bool = False, optimization: str = "joint") -> None:
        """DiffIR's ablation switches exist only for DiffIR: HI-Diff trains its official joint chain."""
        if not enabled or reverse_noise or optimization != "joint":
            raise ConfigError("the diffusion ablation switches (diffusion.enabled/reverse_noise/optimization) are "
                              "DiffIR's; a HI-Diff model trains the official joint chain: remove them")

    def forward(self, lq: torch.Tensor, prior_s1: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        if self.training and prior_s1 is not None:
            priors = self.train_chain(prior_s1, self.condition_of(lq), generator=generator)
            return self.restore(lq, priors[-1]), priors
        if self.training:
            raise ValueError("HIDiffS2 in train mode needs prior_s1 (the stage-1 prior); call model.eval() to sample")
        return self.restore(lq, self.sample_prior(self.condition_of(lq), generator))


def build_model(config: HIDiffConfig) -> HIDiffS1 | HIDiffS2:
    """The wrapper class that matches ``config.stage``."""
    return HIDiffS1(config) if config.stage == 1 else HIDiffS2(config)
