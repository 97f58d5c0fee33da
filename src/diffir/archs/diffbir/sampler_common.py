"""What every DiffBIR sampler shares: random draws, classifier-free guidance, the start point and noise
augmentation (spec §B.5, parity README §7.5).

Random numbers: every draw is a float32 ``randn`` of the draw's shape made on a CPU ``torch.Generator`` and then
moved to the working device, so ``torch.Generator().manual_seed(s)`` reproduces the official draws after
``torch.manual_seed(s)`` on any device.  A :class:`~diffir.diffusion.sampler.PreDrawnNoise` (or any object with a
``draw(shape)`` method, or a plain callable ``shape -> tensor``) may stand in for the generator to inject
recorded draws, taken in the official order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from diffir.archs.diffbir.schedule import Diffusion
from diffir.errors import ConfigError

#: ``model(x, t, cond) -> output``: t is the (B,) *model* timestep (int64; float for DPM-Solver, as official).
SamplerModel = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
START_POINTS = ("noise", "cond")


@runtime_checkable
class NoiseDrawer(Protocol):
    def draw(self, shape: tuple[int, ...]) -> torch.Tensor: ...


#: Where draws come from: a CPU generator, recorded draws (``draw(shape)`` or a callable), or None (torch's default
#: CPU generator).
NoiseSource = torch.Generator | NoiseDrawer | Callable[[tuple[int, ...]], torch.Tensor] | None


def draw_noise(shape: tuple[int, ...] | torch.Size, source: NoiseSource,
               like: torch.Tensor | None = None) -> torch.Tensor:
    """One official draw of ``shape``, moved to ``like``'s device and dtype (float32 CPU without ``like``)."""
    shape = tuple(int(s) for s in shape)
    if isinstance(source, NoiseDrawer):
        noise = source.draw(shape)
    elif source is not None and not isinstance(source, torch.Generator):
        noise = source(shape)
    else:
        device = source.device if source is not None else torch.device("cpu")
        noise = torch.randn(shape, generator=source, device=device, dtype=torch.float32)
    if tuple(noise.shape) != shape:
        raise ValueError(f"injected noise has shape {tuple(noise.shape)}; the sampler draws {shape}")
    if like is not None:
        noise = noise.to(device=like.device, dtype=like.dtype)
    return noise


def cfg_scale_at(cfg_scale: float, model_t: float, rescale: bool) -> float:
    """The CFG scale used at model timestep ``model_t``: constant, or with ``rescale_cfg`` (official: only when
    s > 1) 1 + s·(1 − cos(π·((1000 − τ)/1000)⁵))/2, rising from 1 at τ = 1000 towards s + 1 at τ = 0."""
    if rescale and cfg_scale > 1:
        return 1 + cfg_scale * ((1 - math.cos(math.pi * ((1000 - float(model_t)) / 1000) ** 5.0)) / 2)
    return float(cfg_scale)


def uses_cfg(uncond: Any, cfg_scale: float) -> bool:
    """CFG is skipped (one model call on cond) when there is no uncond or the scale is 1."""
    return uncond is not None and cfg_scale != 1.0


def combine_cfg(out_cond: torch.Tensor, out_uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """uncond + s·(cond − uncond)."""
    return out_uncond + cfg_scale * (out_cond - out_uncond)


def concat_conds(first: Any, second: Any) -> Any:
    """Batch two conditions along dim 0 (tensors, dicts / lists / tuples of tensors), for a batched CFG call."""
    if isinstance(first, torch.Tensor):
        return torch.cat([first, second])
    if isinstance(first, dict):
        return {k: concat_conds(first[k], second[k]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat_conds(a, b) for a, b in zip(first, second, strict=True))
    raise TypeError(f"cannot batch conditions of type {type(first).__name__}; pass batch_cfg=False")


def guided_output(
    model: SamplerModel,
    x: torch.Tensor,
    model_t: torch.Tensor,
    cond: Any,
    uncond: Any,
    cfg_scale: float,
    batched: bool,
) -> torch.Tensor:
    """The CFG-combined model output.  Unbatched: cond call, then uncond call (the spaced sampler's order).
    Batched: one call on [cond; uncond] (DDIM's), split in two."""
    if not uses_cfg(uncond, cfg_scale):
        return model(x, model_t, cond)
    if batched:
        out = model(torch.cat([x, x]), torch.cat([model_t, model_t]), concat_conds(cond, uncond))
        out_cond, out_uncond = out.chunk(2)
    else:
        out_cond = model(x, model_t, cond)
        out_uncond = model(x, model_t, uncond)
    return combine_cfg(out_cond, out_uncond, cfg_scale)


def initial_latent(
    diffusion: Diffusion,
    c_img: torch.Tensor,
    start_point_type: str,
    source: NoiseSource,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_T, the noise drawn): draw 1 of a run, made before noise augmentation.

    ``noise``: x_T is the draw itself.  ``cond``: x_T = q_sample(c_img, T−1, draw); under zero terminal SNR that
    is pure noise again (√ᾱ_{T−1} = 0).
    """
    if start_point_type not in START_POINTS:
        raise ConfigError(f"unknown start point type {start_point_type!r}; choose noise or cond")
    noise = draw_noise(c_img.shape, source, like=c_img)
    if start_point_type == "noise":
        return noise, noise
    t = diffusion.timestep_tensor(diffusion.num_timesteps - 1, c_img.shape[0], c_img.device)
    return diffusion.q_sample(c_img, t, noise), noise


def noise_augment(
    diffusion: Diffusion,
    c_img: torch.Tensor,
    level: int,
    source: NoiseSource,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hint, the noise drawn): q_sample(c_img, level, draw) when level > 0 (draw 2 of a run), else c_img
    unchanged with no draw.  The same noised hint serves cond and uncond (official)."""
    if level <= 0:
        return c_img, None
    if level >= diffusion.num_timesteps:
        raise ConfigError(f"noise augmentation level {level} is past the last timestep "
                          f"{diffusion.num_timesteps - 1}; use 0..{diffusion.num_timesteps - 1}")
    noise = draw_noise(c_img.shape, source, like=c_img)
    t = diffusion.timestep_tensor(level, c_img.shape[0], c_img.device)
    return diffusion.q_sample(c_img, t, noise), noise


def run_steps(step: Callable[[torch.Tensor, int], Any], x_T: torch.Tensor, count: int,
              callback: Callable[[Any], None] | None = None) -> torch.Tensor:
    """The reverse loop of the step-by-step samplers: ``step(x, position)`` returns a record whose ``x_prev`` is
    the next state; ``callback`` sees every record."""
    x = x_T
    for position in range(count):
        result = step(x, position)
        x = result.x_prev
        if callback is not None:
            callback(result)
    return x
