"""DiffBIR's training diffusion: the β schedule (with v2.1's zero terminal SNR), q_sample, the v target and the
training loss (spec §B.4, parity README §7.5–7.6).

Like the official ``Diffusion`` module, only √ᾱ and √(1−ᾱ) are float32 buffers; β stays a float64 array, which
the samplers re-derive their own schedules from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from diffir.errors import ConfigError

#: ``model(x_t, t, cond) -> output``: t is a (B,) int64 tensor of training timesteps, cond is passed through.
DiffusionModel = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]

PARAMETERIZATIONS = ("eps", "v")
#: The released β range and length (configs/inference/diffusion*.yaml).
DEFAULT_LINEAR_START = 0.00085
DEFAULT_LINEAR_END = 0.012
DEFAULT_TIMESTEPS = 1000


def linear_betas(timesteps: int, linear_start: float, linear_end: float) -> np.ndarray:
    """β = linspace(√start, √end, T)², float64 (LDM's "linear" schedule)."""
    return np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2


def enforce_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """v2.1: shift √ᾱ so that √ᾱ_T = 0 and scale it so that √ᾱ_0 is unchanged, then recompute β (β_T becomes 1).

    Computed with torch float64 ops as the official code does: numpy's cumprod differs in the last bit.
    """
    sqrt_ac = (1 - torch.from_numpy(np.asarray(betas, dtype=np.float64))).cumprod(0).sqrt()
    first, last = sqrt_ac[0].clone(), sqrt_ac[-1].clone()
    sqrt_ac = (sqrt_ac - last) * (first / (first - last))
    ac = sqrt_ac**2
    alphas = torch.cat([ac[0:1], ac[1:] / ac[:-1]])
    return (1 - alphas).numpy()


def extract(buffer: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``buffer[t]`` shaped (B, 1, 1, ...) to broadcast over ``like``."""
    out = buffer.to(like.device)[t.to(like.device)]
    return out.reshape(t.shape[0], *([1] * (like.dim() - 1)))


class Diffusion(nn.Module):
    """The training-time schedule: ``betas`` (float64 numpy), buffers ``sqrt_alphas_cumprod`` and
    ``sqrt_one_minus_alphas_cumprod`` (float32), :meth:`q_sample`, :meth:`get_v` and :meth:`p_losses`."""

    def __init__(
        self,
        timesteps: int = DEFAULT_TIMESTEPS,
        linear_start: float = DEFAULT_LINEAR_START,
        linear_end: float = DEFAULT_LINEAR_END,
        parameterization: str = "eps",
        zero_snr: bool = False,
    ) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"unknown DiffBIR parameterization {parameterization!r}; choose eps or v")
        self.num_timesteps = timesteps
        self.parameterization = parameterization
        self.zero_snr = zero_snr
        betas = linear_betas(timesteps, linear_start, linear_end)
        self.betas: np.ndarray = enforce_zero_terminal_snr(betas) if zero_snr else betas
        ac = np.cumprod(1.0 - self.betas, axis=0)
        self.register_buffer("sqrt_alphas_cumprod", torch.tensor(np.sqrt(ac), dtype=torch.float32), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", torch.tensor(np.sqrt(1.0 - ac), dtype=torch.float32),
                             persistent=False)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Diffusion:
        """From the official yaml/json keys (``linear_start``, ``linear_end``, ``timesteps``, optional ``zero_snr``
        and ``parameterization``)."""
        return cls(
            timesteps=int(cfg.get("timesteps", DEFAULT_TIMESTEPS)),
            linear_start=float(cfg.get("linear_start", DEFAULT_LINEAR_START)),
            linear_end=float(cfg.get("linear_end", DEFAULT_LINEAR_END)),
            parameterization=str(cfg.get("parameterization", "eps")),
            zero_snr=bool(cfg.get("zero_snr", False)),
        )

    def timestep_tensor(self, t: int, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B,) int64 tensor filled with ``t``."""
        return torch.full((batch,), int(t), dtype=torch.long, device=device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise."""
        a, s = extract(self.sqrt_alphas_cumprod, t, x0), extract(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * x0 + s * noise

    def get_v(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t·ε − √(1−ᾱ_t)·x0."""
        a, s = extract(self.sqrt_alphas_cumprod, t, x0), extract(self.sqrt_one_minus_alphas_cumprod, t, x0)
        return a * noise - s * x0

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise if self.parameterization == "eps" else self.get_v(x0, noise, t)

    def p_losses(
        self,
        model: DiffusionModel,
        x0: torch.Tensor,
        t: torch.Tensor,
        cond: Any,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mean over all elements of (model(q_sample(x0, t, ε), t, cond) − target)², target ε or v.

        ``noise`` defaults to one float32 ``randn`` of x0's shape from ``generator`` (CPU): the official
        ``randn_like(x0)`` after ``torch.manual_seed`` is the same draw.
        """
        if noise is None:
            device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(x0.shape, generator=generator, device=device, dtype=torch.float32)
        noise = noise.to(device=x0.device, dtype=x0.dtype)
        output = model(self.q_sample(x0, t, noise), t, cond)
        return (output - self.training_target(x0, noise, t)).pow(2).mean()
