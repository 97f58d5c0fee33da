"""DDPM noise schedules, computed in float64 and rounded to float32 exactly like the official buffers.

Two β formulas share the official name "linear" (HI-Diff pitfall A.11.1), so they get distinct names here:

* ``"sqrt_linear"``: β = linspace(√start, √end, T)² — DiffIR, and HI-Diff's LDM path (RealBlur);
* ``"linear"``: β = linspace(start, end, T) — HI-Diff's own sampler (GoPro, ``apply_ldm: False``).
"""

from __future__ import annotations

import numpy as np
import torch

#: The β range of every released DiffIR and HI-Diff configuration; the single source of these defaults.
DEFAULT_LINEAR_START = 0.1
DEFAULT_LINEAR_END = 0.99
SCHEDULES = ("sqrt_linear", "linear")

#: Buffer names in the order of the official ``DDPM`` module (and of the official state_dict).
BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def make_betas(timesteps: int, linear_start: float, linear_end: float, kind: str = "sqrt_linear") -> np.ndarray:
    """The float64 β_t, t = 0..T−1, of one schedule kind."""
    if kind == "sqrt_linear":
        sqrt_betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64, device="cpu")
        return (sqrt_betas**2).numpy()
    if kind == "linear":
        return np.linspace(linear_start, linear_end, timesteps, dtype=np.float64)
    raise ValueError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")


def make_schedule(
    timesteps: int,
    linear_start: float = DEFAULT_LINEAR_START,
    linear_end: float = DEFAULT_LINEAR_END,
    kind: str = "sqrt_linear",
) -> dict[str, torch.Tensor]:
    """All 12 schedule quantities as float32 tensors of shape (T,), bit-identical to the official buffers."""
    betas = make_betas(timesteps, linear_start, linear_end, kind)
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate ranges (β=1) are rejected by callers
        return _schedule(betas)


def _schedule(betas: np.ndarray) -> dict[str, torch.Tensor]:
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)  # v_posterior = 0
    values = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(values[k], dtype=torch.float32, device="cpu") for k in BUFFER_NAMES}
