"""DiffBIR's ``ControlLDM``: the frozen SD 2.1 UNet and VAE, the trainable IRControlNet, and their loading from
the released files (a Stable Diffusion checkpoint + a bare ControlNet state_dict), configs read off the tensors.

The text tower (``cond_stage_model.*``) is built elsewhere (``text.py``); its keys are split out and returned
untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from diffir.archs.diffbir.ldm_detect import (
    DEFAULT_NUM_HEAD_CHANNELS,
    StateDict,
    infer_controlnet_config,
    infer_unet_config,
    infer_vae_config,
    load_strict,
)
from diffir.archs.diffbir.sampler_common import NoiseSource, draw_noise
from diffir.archs.diffbir.unet import ControlNet, UNet, UNetConfig
from diffir.archs.diffbir.vae import AutoencoderKL, VAEConfig
from diffir.errors import CheckpointError

__all__ = [
    "ControlLDM", "SDCheckpointParts", "infer_controlnet_config", "infer_unet_config", "infer_vae_config",
    "split_sd_state_dict",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
LATENT_SCALE_FACTOR = 0.18215  #: SD's latent scale (``scale_factor`` of the released configs)


@dataclass
class SDCheckpointParts:
    """A Stable Diffusion checkpoint split by sub-module, prefixes removed."""

    unet: StateDict
    vae: StateDict
    text: StateDict
    #: keys under none of the three prefixes (LatentDiffusion's schedule buffers, ``model_ema.*``): not used,
    #: as by the official loader.
    other: StateDict


def split_sd_state_dict(sd: Mapping[str, torch.Tensor]) -> SDCheckpointParts:
    parts = SDCheckpointParts({}, {}, {}, {})
    targets = ((UNET_PREFIX, parts.unet), (VAE_PREFIX, parts.vae), (TEXT_PREFIX, parts.text))
    for key, tensor in sd.items():
        for prefix, target in targets:
            if key.startswith(prefix):
                target[key[len(prefix):]] = tensor
                break
        else:
            parts.other[key] = tensor
    return parts


class ControlLDM(nn.Module):
    """``unet`` (SD UNet with control injection), ``controlnet`` (IRControlNet), ``vae`` (AutoencoderKL) and
    ``scale_factor``, the latent scale (latents seen by the diffusion are ``scale_factor ×`` the VAE's)."""

    def __init__(self, unet_config: UNetConfig, controlnet_config: UNetConfig, vae_config: VAEConfig,
                 scale_factor: float = LATENT_SCALE_FACTOR) -> None:
        super().__init__()
        self.unet = UNet(unet_config)
        self.controlnet = ControlNet(controlnet_config)
        self.vae = AutoencoderKL(vae_config)
        self.scale_factor = float(scale_factor)

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_state_dicts(cls, sd: Mapping[str, torch.Tensor], controlnet_sd: Mapping[str, torch.Tensor], *,
                         num_head_channels: int = DEFAULT_NUM_HEAD_CHANNELS,
                         scale_factor: float = LATENT_SCALE_FACTOR, sd_source: str = "SD checkpoint",
                         controlnet_source: str = "ControlNet checkpoint") -> tuple[ControlLDM, SDCheckpointParts]:
        """Build with configs inferred from the tensors and strict-load; returns the model (eval mode) and the
        split SD checkpoint (``.text`` for the text tower).  ``num_head_channels`` is not stored in tensors."""
        parts = split_sd_state_dict(sd)
        unet_cfg = infer_unet_config(parts.unet, num_head_channels, source=sd_source, prefix=UNET_PREFIX)
        vae_cfg = infer_vae_config(parts.vae, source=sd_source, prefix=VAE_PREFIX)
        control_cfg = infer_controlnet_config(controlnet_sd, num_head_channels, unet_cfg.in_channels,
                                              source=controlnet_source)
        model = cls(unet_cfg, control_cfg, vae_cfg, scale_factor)
        model.load_sd_parts(parts, sd_source)
        model.load_controlnet_state_dict(controlnet_sd, controlnet_source)
        return model.eval(), parts

    def load_sd_state_dict(self, sd: Mapping[str, torch.Tensor], source: str = "SD checkpoint") -> SDCheckpointParts:
        """Strict-load ``model.diffusion_model.*`` into ``unet`` and ``first_stage_model.*`` into ``vae``."""
        parts = split_sd_state_dict(sd)
        self.load_sd_parts(parts, source)
        return parts

    def load_sd_parts(self, parts: SDCheckpointParts, source: str = "SD checkpoint") -> None:
        for prefix, tensors, module, what in ((UNET_PREFIX, parts.unet, self.unet, "Stable Diffusion UNet"),
                                              (VAE_PREFIX, parts.vae, self.vae, "Stable Diffusion VAE")):
            if not tensors:
                raise CheckpointError(f"{source}: no '{prefix}*' keys: not a Stable Diffusion checkpoint; supply "
                                      "the SD 2.1-base file (e.g. v2-1_512-ema-pruned.ckpt)")
            load_strict(module, tensors, source, prefix, what)

    def load_controlnet_state_dict(self, sd: Mapping[str, torch.Tensor], source: str = "ControlNet checkpoint") -> None:
        """Strict-load a bare IRControlNet state_dict (the released ControlNet files)."""
        load_strict(self.controlnet, sd, source, "", "IRControlNet")

    # ---------------------------------------------------------------------------------------------- compute
    def vae_encode(self, image: torch.Tensor, sample: bool = False, generator: NoiseSource = None) -> torch.Tensor:
        """Scaled latent of an image in [−1, 1]: the posterior mode (``sample=False``), or a posterior sample whose
        noise is one ``randn(mean.shape)`` from ``generator`` (a CPU ``torch.Generator``, default the global one,
        as officially: the same seed gives the same latent on every device; or recorded draws), × ``scale_factor``.
        """
        posterior = self.vae.encode(image)
        if not sample:
            return posterior.mode() * self.scale_factor
        return posterior.sample(draw_noise(posterior.mean.shape, generator, like=posterior.mean)) * self.scale_factor

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image in about [−1, 1] of a scaled latent."""
        return self.vae.decode(z / self.scale_factor)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, c_txt: torch.Tensor, c_img: torch.Tensor,
                control_scales: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
        """Model output (ε or v) for the noisy latent ``x_t`` (B,4,h,w) at per-sample timesteps ``t`` (B,), text
        context ``c_txt`` (B,L,context_dim) and condition latent ``c_img`` (B,4,h,w).  Control tensor i is scaled
        by ``control_scales[i]`` (extra scales are ignored, as the official zip does; default all 1)."""
        controls = self.controlnet(x_t, c_img, t, c_txt)
        if control_scales is None:
            control_scales = [1.0] * len(controls)
        if len(control_scales) < len(controls):
            raise ValueError(f"control_scales has {len(control_scales)} entries; this ControlNet makes "
                             f"{len(controls)} control tensors")
        scaled = [c * s for c, s in zip(controls, control_scales, strict=False)]
        return self.unet(x_t, t, c_txt, scaled)
