"""DiffBIR's ``dpm++_m2`` sampler: multistep DPM-Solver++ (data prediction), order 2, on the discrete VP schedule
with time-uniform steps and lower-order final steps (spec §B.5).

Official details reproduced (``NoiseScheduleVP('discrete', betas)`` + ``model_wrapper`` + ``DPM_Solver.sample``):
- log α_n = ½·cumsum log(1 − β_n) in float32 (β passed as a float32 tensor), piecewise linear in t = (n + 1)/N;
- the trailing entries with half-log-SNR λ < −5.1 are dropped first (this removes the zero-SNR end of v2.1,
  where λ = −∞), which shortens N and so rescales the model time below;
- the model sees the *float* time (t − 1/N)·1000, solving from t = 1 to t = 1/N;
- v is turned into ε with α_t, σ_t; CFG combines ε of one batched call on [uncond; cond] (optional batching
  here), and rescaled CFG uses the float model time whenever CFG is on (no s > 1 check there, unlike the other
  samplers);
- the last steps use a lower order only when steps < 10; no random draws besides the start point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffir.archs.diffbir.sampler_common import SamplerModel, combine_cfg, concat_conds, uses_cfg
from diffir.archs.diffbir.schedule import Diffusion
from diffir.errors import ConfigError

#: λ below which the discrete schedule's tail is dropped (official ``numerical_clip_alpha``).
CLIPPED_LAMBDA = -5.1


class DiscreteVPSchedule:
    """α_t, σ_t and λ_t of continuous t ∈ [1/N, 1] by linear interpolation of the discrete log α."""

    def __init__(self, betas: np.ndarray) -> None:
        b = torch.tensor(betas, dtype=torch.float32)
        log_alphas = 0.5 * torch.log(1 - b).cumsum(dim=0)
        lambdas = log_alphas - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alphas))
        dropped = int(torch.searchsorted(torch.flip(lambdas, [0]), torch.tensor(CLIPPED_LAMBDA)))
        self.log_alpha_array = log_alphas[: len(log_alphas) - dropped] if dropped > 0 else log_alphas
        self.total_n = int(self.log_alpha_array.shape[0])
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:]

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        xp, fp = self.t_array.to(t.device), self.log_alpha_array.to(t.device)
        i = torch.clamp(torch.searchsorted(xp, t.contiguous()) - 1, 0, self.total_n - 2)
        x0, x1, y0, y1 = xp[i], xp[i + 1], fp[i], fp[i + 1]
        return y0 + (t - x0) * (y1 - y0) / (x1 - x0)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        log_a = self.log_alpha(t)
        return log_a - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_a))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        return (t - 1.0 / self.total_n) * 1000.0


@dataclass
class DPMStep:
    position: int
    order: int
    t_from: float
    t_to: float
    x_prev: torch.Tensor


class DPMSolverSampler:
    """Multistep DPM-Solver++ of order 1 or 2: ``timesteps`` (continuous times, descending), :meth:`sample`."""

    def __init__(self, diffusion: Diffusion, rescale_cfg: bool = False, order: int = 2, batch_cfg: bool = True,
                 lower_order_final: bool = True) -> None:
        if order not in (1, 2):
            raise ConfigError(f"DPM-Solver++ multistep order must be 1 or 2, got {order}")
        self.parameterization = diffusion.parameterization
        self.schedule = DiscreteVPSchedule(diffusion.betas)
        self.rescale_cfg = rescale_cfg
        self.order = order
        self.batch_cfg = batch_cfg
        self.lower_order_final = lower_order_final
        self.times = torch.zeros(0)

    def make_schedule(self, num_steps: int) -> None:
        if num_steps < self.order:
            raise ConfigError(f"DPM-Solver++ of order {self.order} needs at least {self.order} steps")
        self.times = torch.linspace(1.0, 1.0 / self.schedule.total_n, num_steps + 1)  # time-uniform

    @property
    def timesteps(self) -> list[float]:
        """Model times (float) of the model evaluations, in order."""
        return [float(v) for v in self.schedule.model_time(self.times[:-1])]

    def _eps(self, model: SamplerModel, x: torch.Tensor, t: torch.Tensor, cond: Any, uncond: Any,
             cfg_scale: float) -> torch.Tensor:
        """ε (CFG-combined) at continuous time t (a 0-dim tensor)."""
        tb = t.expand(x.shape[0]).to(x.device)
        t_in = self.schedule.model_time(tb)

        def to_eps(out: torch.Tensor, xs: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
            if self.parameterization == "eps":
                return out
            shape = (-1, *([1] * (x.dim() - 1)))
            return self.schedule.alpha(ts).view(shape) * out + self.schedule.sigma(ts).view(shape) * xs

        if not uses_cfg(uncond, cfg_scale):
            return to_eps(model(x, t_in, cond), x, tb)
        if self.batch_cfg:
            xs, ts = torch.cat([x, x]), torch.cat([tb, tb])
            eps_uncond, eps_cond = to_eps(model(xs, self.schedule.model_time(ts), concat_conds(uncond, cond)),
                                          xs, ts).chunk(2)
        else:
            eps_uncond = to_eps(model(x, t_in, uncond), x, tb)
            eps_cond = to_eps(model(x, t_in, cond), x, tb)
        scale = cfg_scale
        if self.rescale_cfg:
            tau = float(self.schedule.model_time(t.reshape(1))[0])
            scale = 1 + cfg_scale * ((1 - math.cos(math.pi * ((1000 - tau) / 1000) ** 5.0)) / 2)
        return combine_cfg(eps_cond, eps_uncond, scale)

    def _data_prediction(self, model: SamplerModel, x: torch.Tensor, t: torch.Tensor, cond: Any, uncond: Any,
                         cfg_scale: float) -> torch.Tensor:
        eps = self._eps(model, x, t, cond, uncond, cfg_scale)
        return (x - self.schedule.sigma(t) * eps) / self.schedule.alpha(t)

    def _update(self, x: torch.Tensor, x0s: list[torch.Tensor], ts: list[torch.Tensor], t: torch.Tensor,
                order: int) -> torch.Tensor:
        """DPM-Solver++ from ts[-1] to t: first order (DDIM-like), or multistep second order using x0s[-2:]."""
        s = self.schedule
        h = s.lam(t) - s.lam(ts[-1])
        phi = torch.expm1(-h)
        x_t = (s.sigma(t) / s.sigma(ts[-1])) * x - (s.alpha(t) * phi) * x0s[-1]
        if order == 2:
            r0 = (s.lam(ts[-1]) - s.lam(ts[-2])) / h
            d1 = (1.0 / r0) * (x0s[-1] - x0s[-2])
            x_t = x_t - 0.5 * (s.alpha(t) * phi) * d1
        return x_t

    def _step_order(self, step: int, steps: int) -> int:
        if step < self.order:
            return step  # warm-up with the lower orders
        if self.lower_order_final and steps < 10:
            return min(self.order, steps + 1 - step)
        return self.order

    @torch.no_grad()
    def sample(self, model: SamplerModel, x_T: torch.Tensor, steps: int, cond: Any, uncond: Any, cfg_scale: float,
               noise_source: Any = None, callback: Callable[[DPMStep], None] | None = None) -> torch.Tensor:
        """``noise_source`` is accepted for a uniform sampler interface; DPM-Solver++ draws nothing."""
        self.make_schedule(steps)
        times = self.times.to(x_T.device)
        x = x_T
        ts = [times[0]]
        x0s = [self._data_prediction(model, x, times[0], cond, uncond, cfg_scale)]
        for step in range(1, steps + 1):
            t = times[step]
            order = self._step_order(step, steps)
            x = self._update(x, x0s, ts, t, order)
            ts = [*ts, t][-self.order:]
            if step < steps:  # the final model value is never needed
                x0s = [*x0s, self._data_prediction(model, x, t, cond, uncond, cfg_scale)][-self.order:]
            if callback is not None:
                callback(DPMStep(step - 1, order, float(times[step - 1]), float(t), x))
        return x
