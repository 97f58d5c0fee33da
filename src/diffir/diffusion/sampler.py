"""The small prior diffusions of DiffIR and HI-Diff: a T-step DDPM on a prior tensor, trained end to end.

Both official samplers return the posterior *mean* at every reverse step (no noise is ever added), so sampling
is deterministic given x_T.  What differs between the code paths is configured on :class:`PriorDiffusion`:

=====================  ===========  ======================  =====================
option                 DiffIR       HI-Diff LDM (RealBlur)  HI-Diff GoPro
=====================  ===========  ======================  =====================
``schedule``           sqrt_linear  sqrt_linear             linear
``prediction``         x0           x0                      eps
``clamp_x0``           no           no                      yes, [−1, 1]
``draw_step_noise``    yes          yes                     no
``train_start``        q_sample     q_sample                alpha_bar (quirk)
=====================  ===========  ======================  =====================

``draw_step_noise`` reproduces the official random-number consumption: those samplers draw one normal tensor
per reverse step and throw it away, so seeded sampling (and anything drawn after it) only matches the
official stream if the same draws happen here.

Random numbers are always drawn in float32 with the shape of the condition (DiffIR (B, 256), HI-Diff
(B, N, C')), on the device of ``generator`` (CPU by default, so ``torch.manual_seed`` before a call reproduces
the official draws), then moved to the working device: a seed gives the same prior on CPU, CUDA or MPS.
A :class:`PreDrawnNoise` passed as ``generator`` supplies those draws instead (x_T first, then one per reverse
step), which makes sampling a plain function of tensors (the ONNX export feeds them as graph inputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from diffir.diffusion.schedule import BUFFER_NAMES, SCHEDULES, make_schedule

#: ``denoiser(x_t, t, cond)`` with ``t`` a (B,) long tensor of timestep indices 0..T−1; every architecture
#: adapts its official time argument (t, t+1, t/(10·T) ...) in its own wrapper.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

PREDICTIONS = ("x0", "eps")
#: ``q_sample``: √ᾱ_T·z + √(1−ᾱ_T)·ε.  ``alpha_bar``: HI-Diff GoPro's ᾱ_T·z + √(1−ᾱ_T²)·ε (pitfall A.11.2: the
#: official code passes ᾱ_T where its q_sample expects √ᾱ_T).
TRAIN_STARTS = ("q_sample", "alpha_bar")


class PreDrawnNoise:
    """Noise drawn beforehand, passed to the sampler where a ``torch.Generator`` goes: each draw the sampler makes
    takes the next tensor, in the order a generator would be used (x_T, then one per reverse step if the sampler
    draws those: :attr:`PriorDiffusion.draws_per_sample` in all).  Each tensor has the draw's shape
    (B, *prior_shape).

    With a ``generator``, draws past the given tensors are made from it (float32, as the sampler draws) and
    appended to :attr:`tensors`: ``PreDrawnNoise(generator=torch.Generator().manual_seed(s))`` samples exactly as
    that seeded generator would and records the noise it used.  Without one, running out is an error.
    """

    def __init__(self, tensors: Iterable[torch.Tensor] = (), generator: torch.Generator | None = None) -> None:
        self.tensors = list(tensors)
        self.generator = generator
        self.taken = 0

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.taken < len(self.tensors):
            noise = self.tensors[self.taken]
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(f"pre-drawn noise {self.taken} has shape {tuple(noise.shape)}; the sampler draws "
                                 f"{tuple(shape)}")
        elif self.generator is not None:
            noise = torch.randn(shape, generator=self.generator, device=self.generator.device, dtype=torch.float32)
            self.tensors.append(noise)
        else:
            raise ValueError(f"the sampler needs more than the {len(self.tensors)} pre-drawn noise tensors given")
        self.taken += 1
        return noise


#: What the sampling methods accept as ``generator``.
NoiseSource = torch.Generator | PreDrawnNoise | None


def _randn(batch: int, like: torch.Tensor, generator: NoiseSource) -> torch.Tensor:
    """One official draw: float32 ``randn((batch, *like.shape[1:]))`` on the generator's device."""
    if isinstance(generator, PreDrawnNoise):
        noise = generator.draw((batch, *like.shape[1:]))
    else:
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn((batch, *like.shape[1:]), generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class PriorDiffusion(nn.Module):
    """Schedule buffers + forward (training start) and reverse (p_step) processes on a prior tensor.

    Buffers are non-persistent: they are a pure function of the constructor arguments, which the model config
    stores.  Official layouts that do save them are produced by the checkpoint writers.
    """

    def __init__(
        self,
        timesteps: int,
        linear_start: float,
        linear_end: float,
        *,
        schedule: str = "sqrt_linear",
        prediction: str = "x0",
        clamp_x0: bool = False,
        draw_step_noise: bool = True,
        train_start: str = "q_sample",
        reverse_noise: bool = False,
    ) -> None:
        super().__init__()
        for value, allowed, what in ((schedule, SCHEDULES, "schedule"), (prediction, PREDICTIONS, "prediction"),
                                     (train_start, TRAIN_STARTS, "train_start")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        self.timesteps = timesteps
        self.schedule = schedule
        self.prediction = prediction
        #: Clamp x̂0 to [−1, 1] (HI-Diff GoPro, in training and at test: pitfall A.11.5).
        self.clamp_x0 = clamp_x0
        self.draw_step_noise = draw_step_noise
        self.train_start = train_start
        #: Paper ablation (DiffIR V4): add posterior noise in each reverse step (the official code does not).
        self.reverse_noise = reverse_noise
        for name, value in make_schedule(timesteps, linear_start, linear_end, schedule).items():
            self.register_buffer(name, value, persistent=False)

    @property
    def draws_per_sample(self) -> int:
        """Normal tensors one :meth:`sample` (or :meth:`train_chain` without noise) takes from the generator."""
        return 1 + (self.timesteps if self.draw_step_noise or self.reverse_noise else 0)

    def _coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        buf: torch.Tensor = getattr(self, name)
        return buf.to(like.device)[t].view(-1, *([1] * (like.dim() - 1))).to(like.dtype)

    def _work_dtype(self, x: torch.Tensor) -> torch.dtype:
        # The official coefficients are tensors in the module dtype; mixed arithmetic promotes to it.
        return torch.promote_types(x.dtype, self.betas.dtype)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse a clean prior to step t: √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""
        x0 = x0.to(self._work_dtype(x0))
        noise = noise.to(x0.dtype)
        sqrt_ac = self._coef("sqrt_alphas_cumprod", t, x0)
        return sqrt_ac * x0 + self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def start_state(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training chain's x_T (t = T−1) built from the stage-1 prior, by the configured rule."""
        t = torch.full((x0.shape[0],), self.timesteps - 1, dtype=torch.long, device=x0.device)
        if self.train_start == "q_sample":
            return self.q_sample(x0, t, noise)
        x0 = x0.to(self._work_dtype(x0))
        a = self._coef("alphas_cumprod", t, x0)
        return a * x0 + (1 - a**2).sqrt() * noise.to(x0.dtype)  # official float32 expression, quirk kept

    def predict_x0(self, out: torch.Tensor, x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        """x̂0 from the denoiser output (x0 itself, or ε̂ turned into x̂0), clamped if configured."""
        x0 = out
        if self.prediction == "eps":
            recip = self._coef("sqrt_recip_alphas_cumprod", tt, x)
            x0 = recip * x - self._coef("sqrt_recipm1_alphas_cumprod", tt, x) * out
        return x0.clamp(-1.0, 1.0) if self.clamp_x0 else x0

    def p_step(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        t: int,
        cond: torch.Tensor,
        generator: NoiseSource = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step t → t−1.  Returns (x_{t−1}, x̂0)."""
        batch = x.shape[0]
        tt = torch.full((batch,), t, dtype=torch.long, device=x.device)
        x0 = self.predict_x0(denoiser(x, tt, cond), x, tt)
        mean = self._coef("posterior_mean_coef1", tt, x0) * x0 + self._coef("posterior_mean_coef2", tt, x0) * x
        if self.draw_step_noise or self.reverse_noise:
            noise = _randn(batch, mean, generator)  # official samplers draw it even though it is never added
            if self.reverse_noise and t > 0:
                log_var = self._coef("posterior_log_variance_clipped", tt, mean)
                mean = mean + (0.5 * log_var).exp() * noise
        return mean, x0

    def reverse(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: torch.Tensor,
        generator: NoiseSource = None,
    ) -> list[torch.Tensor]:
        """Run all T reverse steps from x_T; returns x after each step (the last one is the prior)."""
        out = []
        for t in reversed(range(self.timesteps)):
            x, _ = self.p_step(denoiser, x, t, cond, generator)
            out.append(x)
        return out

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, cond: torch.Tensor, generator: NoiseSource = None) -> torch.Tensor:
        """Eval: x_T ~ N(0, I) with the condition's shape, then T reverse steps (:attr:`draws_per_sample` draws)."""
        x = _randn(cond.shape[0], cond, generator).to(self._work_dtype(cond))
        return self.reverse(denoiser, x, cond, generator)[-1]

    def train_chain(
        self,
        denoiser: Denoiser,
        prior_s1: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: NoiseSource = None,
    ) -> list[torch.Tensor]:
        """Training (joint optimisation): diffuse the stage-1 prior to t = T−1, then run every reverse step with
        gradients.  Returns the state after each step; the last one drives the restoration network."""
        if noise is None:
            # Official: randn_like(prior_s1), in its dtype.  We draw float32 on the generator's device.
            noise = _randn(prior_s1.shape[0], prior_s1, generator)
        return self.reverse(denoiser, self.start_state(prior_s1, noise), cond, generator)

    def schedule_state(self) -> dict[str, torch.Tensor]:
        """The 12 buffers in official order (float32), for writing official layouts."""
        return {name: getattr(self, name).detach().to("cpu", torch.float32).clone() for name in BUFFER_NAMES}


class IPRDiffusion(PriorDiffusion):
    """DiffIR's configuration: sqrt-linear β, x0 prediction, no clamp, one discarded draw per reverse step."""

    def __init__(self, timesteps: int, linear_start: float, linear_end: float, reverse_noise: bool = False) -> None:
        super().__init__(timesteps, linear_start, linear_end, reverse_noise=reverse_noise)
