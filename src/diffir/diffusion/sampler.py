"""Diffusion on the 256-d IPR: x0-parameterised DDPM with T (default 4) steps.

Matches the official sampler exactly, including how it consumes random numbers: every reverse step draws
one ``randn(B, 256)`` even though no noise is added (the step returns the posterior mean).  Seeded sampling
therefore reproduces official outputs bit for bit on the CPU generator.

Random numbers are always drawn in float32 (then upcast), on the device of ``generator`` (CPU by default):
so a seed gives the same IPR on CPU, CUDA or MPS.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from diffir.diffusion.schedule import BUFFER_NAMES, make_schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _randn(batch: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One official draw: float32 ``randn((batch, D))`` with D the IPR size of ``like`` (256 in DiffIR)."""
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn((batch, like.shape[-1]), generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class IPRDiffusion(nn.Module):
    """Schedule buffers + forward (q_sample) and reverse (p_step) processes on IPR vectors.

    Buffers are non-persistent: they are a pure function of (timesteps, linear_start, linear_end), which the
    model config stores.  The official layout (where they *are* saved) is produced by the checkpoint writer.
    """

    def __init__(self, timesteps: int, linear_start: float, linear_end: float, reverse_noise: bool = False) -> None:
        super().__init__()
        self.timesteps = timesteps
        #: Paper ablation V4: add posterior noise in each reverse step (the official code does not).
        self.reverse_noise = reverse_noise
        for name, value in make_schedule(timesteps, linear_start, linear_end).items():
            self.register_buffer(name, value, persistent=False)

    def _coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        buf: torch.Tensor = getattr(self, name)
        return buf.to(like.device)[t].view(-1, 1).to(like.dtype)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse a clean IPR to step t: √ᾱ_t·x0 + √(1−ᾱ_t)·ε."""
        x0 = x0.to(self._work_dtype(x0))
        noise = noise.to(x0.dtype)
        sqrt_ac = self._coef("sqrt_alphas_cumprod", t, x0)
        return sqrt_ac * x0 + self._coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def _work_dtype(self, x: torch.Tensor) -> torch.dtype:
        # The official coefficients are (B,1) tensors in the module dtype; mixed arithmetic promotes to it.
        return torch.promote_types(x.dtype, self.betas.dtype)

    def p_step(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        t: int,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step t → t−1.  Returns (x_{t−1}, x0 prediction)."""
        batch = x.shape[0]
        tt = torch.full((batch,), t, dtype=torch.long, device=x.device)
        x0 = denoiser(x, tt, cond)  # no clamp (clip_denoised=False upstream)
        mean = self._coef("posterior_mean_coef1", tt, x0) * x0 + self._coef("posterior_mean_coef2", tt, x0) * x
        noise = _randn(batch, mean, generator)  # drawn even when unused, to keep the official RNG stream
        if self.reverse_noise and t > 0:
            log_var = self._coef("posterior_log_variance_clipped", tt, mean)
            mean = mean + (0.5 * log_var).exp() * noise
        return mean, x0

    def reverse(
        self,
        denoiser: Denoiser,
        x: torch.Tensor,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Run all T reverse steps from x (= x_{T−1} level input); returns x after each step."""
        out = []
        for t in reversed(range(self.timesteps)):
            x, _ = self.p_step(denoiser, x, t, cond, generator)
            out.append(x)
        return out

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eval: x_T ~ N(0, I), then T reverse steps.  Consumes T+1 draws of (B, 256)."""
        x = _randn(cond.shape[0], cond, generator).to(self._work_dtype(cond))
        return self.reverse(denoiser, x, cond, generator)[-1]

    def train_chain(
        self,
        denoiser: Denoiser,
        ipr_s1: torch.Tensor,
        cond: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Training (paper's joint optimisation, V3): diffuse IPR_S1 to t = T−1, then run every reverse step
        with gradients.  Returns the list of intermediate IPRs; the last one drives the DIRformer."""
        batch = ipr_s1.shape[0]
        if noise is None:
            # Official: randn_like(IPR_S1) — in IPR_S1's dtype.  We draw float32 on the generator's device.
            noise = _randn(batch, ipr_s1, generator)
        t = torch.full((batch,), self.timesteps - 1, dtype=torch.long, device=ipr_s1.device)
        x = self.q_sample(ipr_s1, t, noise)
        return self.reverse(denoiser, x, cond, generator)

    def schedule_state(self) -> dict[str, torch.Tensor]:
        """The 12 buffers in official order (float32), for writing the official layout."""
        return {name: getattr(self, name).detach().to("cpu", torch.float32).clone() for name in BUFFER_NAMES}
