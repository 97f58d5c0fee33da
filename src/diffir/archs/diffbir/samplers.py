"""DiffBIR's samplers by their CLI names (``--sampler``), over one :class:`~diffir.archs.diffbir.schedule.Diffusion`.

Every sampler has ``make_schedule(n)``, ``timesteps`` (model timesteps in loop order) and
``sample(model, x_T, steps, cond, uncond, cfg_scale, noise_source=None, callback=None)``; the spaced and DDIM
samplers also expose ``step(model, x, position, cond, uncond, cfg_scale, noise_source)``.  ``model(x, t, cond)``
gets the (B,) model timestep (int64; float for DPM-Solver++, as official) and an opaque ``cond``.
"""

from __future__ import annotations

from diffir.archs.diffbir.guidance import Decode, Encode, Guidance
from diffir.archs.diffbir.sampler_common import (
    NoiseSource,
    SamplerModel,
    cfg_scale_at,
    draw_noise,
    initial_latent,
    noise_augment,
)
from diffir.archs.diffbir.sampler_ddim import DDIMSampler
from diffir.archs.diffbir.sampler_dpm import DPMSolverSampler
from diffir.archs.diffbir.sampler_spaced import SpacedSampler
from diffir.archs.diffbir.schedule import Diffusion
from diffir.errors import ConfigError

#: The samplers implemented here (the official CLI also lists ``edm_*`` k-diffusion solvers).
SAMPLER_NAMES = ("spaced", "ddim", "dpm++_m2", "dpm++_m1")

Sampler = SpacedSampler | DDIMSampler | DPMSolverSampler

__all__ = ["SAMPLER_NAMES", "DDIMSampler", "DPMSolverSampler", "Diffusion", "NoiseSource", "Sampler",
           "SamplerModel", "SpacedSampler", "cfg_scale_at", "draw_noise", "initial_latent", "make_sampler",
           "noise_augment"]


def make_sampler(
    name: str,
    diffusion: Diffusion,
    rescale_cfg: bool = False,
    guidance: Guidance | None = None,
    decode: Decode | None = None,
    encode: Encode | None = None,
) -> Sampler:
    """The sampler ``name`` (``spaced``, ``ddim`` with η = 0, ``dpm++_m2``/``dpm++_m1``).  Restoration guidance
    (v2.0.0) exists only in the spaced sampler, as officially."""
    if guidance is not None and name != "spaced":
        raise ConfigError(f"restoration guidance works only with the spaced sampler, not {name!r}; "
                          f"use --sampler spaced")
    if name == "spaced":
        return SpacedSampler(diffusion, rescale_cfg, guidance, decode, encode)
    if name == "ddim":
        return DDIMSampler(diffusion, rescale_cfg)
    if name in ("dpm++_m2", "dpm++_m1"):
        return DPMSolverSampler(diffusion, rescale_cfg, order=int(name[-1]))
    raise ConfigError(f"unknown DiffBIR sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
