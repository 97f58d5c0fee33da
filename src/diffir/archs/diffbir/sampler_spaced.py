"""DiffBIR's ``spaced`` sampler: IDDPM respacing of the training schedule and ancestral posterior sampling
(spec §B.5, parity README §4.3 and §7.5), with optional v2.0.0 restoration guidance (§7.7).

Official details reproduced: the model sees the original timestep τ_i while every coefficient is indexed by the
spaced index i; x̂0 is not clipped; one normal draw per step, also at index 0 where it is masked out; under zero
terminal SNR the 1/√ᾱ buffers hold +inf at the last index (only the eps path would read them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffir.archs.diffbir.guidance import Decode, Encode, Guidance, GuidedX0, guide_x0
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

#: The float32 buffers of a spaced schedule, in the official registration order.
SPACED_BUFFERS = (
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
)


def space_timesteps(num_timesteps: int, section_counts: str) -> set[int]:
    """IDDPM's respacing: ``"n"`` or ``"n1,n2,..."`` evenly spaced counts per equal section, with rounding
    (1000, "3" → {0, 500, 999}; "10" → {0, 111, ..., 999})."""
    counts = [int(c) for c in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, set()
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or size < count:
            raise ConfigError(f"cannot take {count} spaced steps from a section of {size} timesteps; use 1..{size}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.add(start + round(cur))
            cur += stride
        start += size
    return steps


def spaced_schedule(betas: np.ndarray, num_steps: int) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """(ascending int64 model timesteps, the 8 float32 buffers) of ``make_schedule(num_steps)``."""
    used = space_timesteps(len(betas), str(num_steps))
    train_ac = np.cumprod(1.0 - betas, axis=0)
    spaced_betas, last = [], 1.0
    for i, ac in enumerate(train_ac):
        if i in used:
            spaced_betas.append(1 - ac / last)
            last = ac
    b = np.array(spaced_betas, dtype=np.float64)
    alphas = 1.0 - b
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    with np.errstate(divide="ignore"):  # zero terminal SNR: ᾱ = 0 at the last index gives +inf (official)
        values = {
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        }
    post_var = b * (1.0 - ac_prev) / (1.0 - ac)
    values.update({
        "posterior_variance": post_var,
        # Clipped at index 0 by repeating var_1 (the variance there is 0).  A 1-step schedule has no var_1 (the
        # official code raises IndexError); its only step is index 0, whose noise is masked, so 0 is kept.
        "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:])) if len(post_var) > 1
        else np.log(np.maximum(post_var, np.finfo(np.float64).tiny)),
        "posterior_mean_coef1": b * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
    })
    timesteps = np.array(sorted(used), dtype=np.int64)
    return timesteps, {k: torch.tensor(values[k], dtype=torch.float32) for k in SPACED_BUFFERS}


@dataclass
class SpacedStep:
    """Everything one reverse step computed (``x_prev`` is the new state).  ``pred_x0`` is the model's x̂0;
    with guidance, the posterior mean used ``guided.x0`` instead."""

    position: int
    index: int
    model_t: int
    cfg_scale: float
    model_output: torch.Tensor
    pred_x0: torch.Tensor
    mean: torch.Tensor
    variance: torch.Tensor
    noise: torch.Tensor
    x_prev: torch.Tensor
    guided: GuidedX0 | None = None


StepCallback = Callable[[SpacedStep], None]


class SpacedSampler:
    """``make_schedule(n)``, then ``timesteps`` (descending model timesteps, the loop order), :meth:`step` for one
    reverse step at loop position i, and :meth:`sample` for the loop."""

    def __init__(self, diffusion: Diffusion, rescale_cfg: bool = False, guidance: Guidance | None = None,
                 decode: Decode | None = None, encode: Encode | None = None) -> None:
        self.betas = diffusion.betas
        self.parameterization = diffusion.parameterization
        self.rescale_cfg = rescale_cfg
        self.guidance = guidance
        self.decode = decode
        self.encode = encode
        self.buffers: dict[str, torch.Tensor] = {}
        self.schedule_timesteps = np.zeros(0, dtype=np.int64)

    def make_schedule(self, num_steps: int) -> None:
        self.schedule_timesteps, self.buffers = spaced_schedule(self.betas, num_steps)
        if self.parameterization == "eps" and float(self.buffers["sqrt_alphas_cumprod"][-1]) == 0.0:
            # Official: NaN samples (an eps model cannot predict x0 where ᾱ = 0).
            raise ConfigError("an eps-prediction model cannot sample a zero-terminal-SNR schedule; use the v2.1 "
                              "(v-prediction) weights with it, or the plain schedule with eps weights")

    @property
    def timesteps(self) -> list[int]:
        """Model timesteps in sampling order (descending)."""
        return [int(t) for t in self.schedule_timesteps[::-1]]

    def _coef(self, name: str, index: int, like: torch.Tensor) -> torch.Tensor:
        return self.buffers[name][index].to(like.device)

    def predict_x0(self, x: torch.Tensor, index: int, model_output: torch.Tensor) -> torch.Tensor:
        if self.parameterization == "eps":
            return self._coef("sqrt_recip_alphas_cumprod", index, x) * x - \
                self._coef("sqrt_recipm1_alphas_cumprod", index, x) * model_output
        return self._coef("sqrt_alphas_cumprod", index, x) * x - \
            self._coef("sqrt_one_minus_alphas_cumprod", index, x) * model_output

    def step(self, model: SamplerModel, x: torch.Tensor, position: int, cond: Any, uncond: Any,
             cfg_scale: float, noise_source: NoiseSource = None) -> SpacedStep:
        """Official ``p_sample`` at loop position ``position`` (0 = first step, at the largest timestep)."""
        count = len(self.schedule_timesteps)
        index = count - 1 - position
        model_t = int(self.schedule_timesteps[index])
        scale = cfg_scale_at(cfg_scale, model_t, self.rescale_cfg)
        t_model = torch.full((x.shape[0],), model_t, dtype=torch.long, device=x.device)
        output = guided_output(model, x, t_model, cond, uncond, scale, batched=False)
        pred_x0 = self.predict_x0(x, index, output)
        x0, guided = pred_x0, None
        if self.guidance is not None:
            # v2.0.0: the posterior mean takes the guided x̂0 with the unguided x_t.
            guided = guide_x0(self.guidance, pred_x0, model_t, self._coef("posterior_mean_coef1", index, x),
                              self.decode, self.encode, noise_source)
            x0 = guided.x0
        mean = self._coef("posterior_mean_coef1", index, x) * x0 + self._coef("posterior_mean_coef2", index, x) * x
        variance = self._coef("posterior_variance", index, x).expand(x.shape[0])
        noise = draw_noise(x.shape, noise_source, like=x)  # drawn at index 0 too (official), then masked
        nonzero = float(index != 0)
        x_prev = mean + nonzero * torch.sqrt(variance).view(-1, *([1] * (x.dim() - 1))) * noise
        return SpacedStep(position, index, model_t, scale, output, pred_x0, mean, variance, noise, x_prev, guided)

    @torch.no_grad()
    def sample(self, model: SamplerModel, x_T: torch.Tensor, steps: int, cond: Any, uncond: Any, cfg_scale: float,
               noise_source: NoiseSource = None, callback: StepCallback | None = None) -> torch.Tensor:
        """Run ``steps`` reverse steps from ``x_T``; ``callback`` sees every :class:`SpacedStep`."""
        self.make_schedule(steps)
        if self.guidance is not None and self.guidance.target is not None:
            self.guidance.target = self.guidance.target.to(x_T.device)
        return run_steps(lambda x, i: self.step(model, x, i, cond, uncond, cfg_scale, noise_source), x_T,
                         len(self.schedule_timesteps), callback)
