"""DiffBIR's ``ddim`` sampler (η = 0 in the pipeline), parity README §7.5.

Official quirks reproduced: model timesteps range(0, T, T // n) + 1, so the step count can differ from n (6 → 7)
and some n reach timestep T (3, 9 with T = 1000: an IndexError officially, a ConfigError naming working counts
here); ᾱ_prev of the first step is ᾱ_0, not 1; v is turned into ε with the DDIM-indexed ᾱ; one normal draw per
step although σ = 0; CFG as one batched call on [cond; uncond] (optional here: same result unbatched).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffir.archs.diffbir.sampler_common import (
    NoiseSource,
    SamplerModel,
    cfg_scale_at,
    draw_noise,
    guided_output,
    run_steps,
)
from diffir.archs.diffbir.schedule import Diffusion
from diffir.errors import ConfigError

DDIM_BUFFERS = ("ddim_sigmas", "ddim_alphas", "ddim_sqrt_alphas", "ddim_alphas_prev", "ddim_sqrt_one_minus_alphas")


def ddim_timesteps(num_steps: int, num_timesteps: int = 1000) -> np.ndarray:
    """Ascending model timesteps of ``make_schedule(num_steps)``; a ConfigError for counts the official code
    cannot run."""
    if num_steps < 1 or num_steps > num_timesteps:
        raise ConfigError(f"DDIM steps must be in 1..{num_timesteps}, got {num_steps}")
    steps = np.asarray(list(range(0, num_timesteps, num_timesteps // num_steps))) + 1
    if steps[-1] >= num_timesteps:
        raise ConfigError(f"DDIM cannot run {num_steps} steps (its timesteps would reach {num_timesteps}, past the "
                          f"schedule); use {_nearest_valid(num_steps, num_timesteps)} steps")
    return steps.astype(np.int64)


def _valid(num_steps: int, num_timesteps: int) -> bool:
    return max(range(0, num_timesteps, num_timesteps // num_steps)) + 1 < num_timesteps


def _nearest_valid(num_steps: int, num_timesteps: int) -> str:
    below = next((n for n in range(num_steps - 1, 0, -1) if _valid(n, num_timesteps)), None)
    above = next((n for n in range(num_steps + 1, num_timesteps + 1) if _valid(n, num_timesteps)), None)
    return " or ".join(str(n) for n in (below, above) if n is not None)


def ddim_schedule(betas: np.ndarray, num_steps: int, eta: float = 0.0) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """(ascending model timesteps, the 5 float32 DDIM buffers)."""
    steps = ddim_timesteps(num_steps, len(betas))
    train_ac = np.cumprod(1.0 - betas, axis=0)
    alphas = train_ac[steps]
    alphas_prev = np.asarray([train_ac[0]] + train_ac[steps[:-1]].tolist())  # first ᾱ_prev is ᾱ_0 (official)
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    values = {
        "ddim_sigmas": sigmas,
        "ddim_alphas": alphas,
        "ddim_sqrt_alphas": np.sqrt(alphas),
        "ddim_alphas_prev": alphas_prev,
        "ddim_sqrt_one_minus_alphas": np.sqrt(1.0 - alphas),
    }
    return steps, {k: torch.tensor(values[k], dtype=torch.float32) for k in DDIM_BUFFERS}


@dataclass
class DDIMStep:
    position: int
    index: int
    model_t: int
    cfg_scale: float
    model_output: torch.Tensor
    eps: torch.Tensor
    pred_x0: torch.Tensor
    noise: torch.Tensor
    x_prev: torch.Tensor


class DDIMSampler:
    """``make_schedule(n)``, ``timesteps`` (descending), :meth:`step` and :meth:`sample`."""

    def __init__(self, diffusion: Diffusion, rescale_cfg: bool = False, eta: float = 0.0,
                 batch_cfg: bool = True) -> None:
        self.betas = diffusion.betas
        self.parameterization = diffusion.parameterization
        self.rescale_cfg = rescale_cfg
        self.eta = float(eta)
        #: One model call on [cond; uncond] (official) or two calls; the results agree.
        self.batch_cfg = batch_cfg
        self.buffers: dict[str, torch.Tensor] = {}
        self.schedule_timesteps = np.zeros(0, dtype=np.int64)

    def make_schedule(self, num_steps: int) -> None:
        self.schedule_timesteps, self.buffers = ddim_schedule(self.betas, num_steps, self.eta)

    @property
    def timesteps(self) -> list[int]:
        return [int(t) for t in self.schedule_timesteps[::-1]]

    def _coef(self, name: str, index: int, like: torch.Tensor) -> torch.Tensor:
        return self.buffers[name][index].to(like.device)

    def step(self, model: SamplerModel, x: torch.Tensor, position: int, cond: Any, uncond: Any,
             cfg_scale: float, noise_source: NoiseSource = None) -> DDIMStep:
        index = len(self.schedule_timesteps) - 1 - position
        model_t = int(self.schedule_timesteps[index])
        scale = cfg_scale_at(cfg_scale, model_t, self.rescale_cfg)
        t_model = torch.full((x.shape[0],), model_t, dtype=torch.long, device=x.device)
        output = guided_output(model, x, t_model, cond, uncond, scale, batched=self.batch_cfg)
        if self.parameterization == "eps":
            eps = output
        else:
            eps = self._coef("ddim_sqrt_alphas", index, x) * output + \
                self._coef("ddim_sqrt_one_minus_alphas", index, x) * x
        a_t = self._coef("ddim_alphas", index, x)
        a_prev = self._coef("ddim_alphas_prev", index, x)
        sigma = self._coef("ddim_sigmas", index, x)
        pred_x0 = (x - self._coef("ddim_sqrt_one_minus_alphas", index, x) * eps) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma**2).sqrt() * eps
        noise = draw_noise(x.shape, noise_source, like=x)  # drawn although σ = 0 (official)
        x_prev = a_prev.sqrt() * pred_x0 + dir_xt + sigma * noise
        return DDIMStep(position, index, model_t, scale, output, eps, pred_x0, noise, x_prev)

    @torch.no_grad()
    def sample(self, model: SamplerModel, x_T: torch.Tensor, steps: int, cond: Any, uncond: Any, cfg_scale: float,
               noise_source: NoiseSource = None, callback: Callable[[DDIMStep], None] | None = None) -> torch.Tensor:
        self.make_schedule(steps)
        return run_steps(lambda x, i: self.step(model, x, i, cond, uncond, cfg_scale, noise_source), x_T,
                         len(self.schedule_timesteps), callback)
