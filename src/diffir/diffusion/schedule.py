"""The DDPM noise schedule of DiffIR: linear in √β, computed in float64 and rounded to float32."""

from __future__ import annotations

import numpy as np
import torch

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


def make_schedule(timesteps: int, linear_start: float = 0.1, linear_end: float = 0.99) -> dict[str, torch.Tensor]:
    """All 12 schedule quantities as float32 tensors of shape (T,), bit-identical to the official buffers."""
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate ranges (β=1) are rejected by callers
        return _schedule(timesteps, linear_start, linear_end)


def _schedule(timesteps: int, linear_start: float, linear_end: float) -> dict[str, torch.Tensor]:
    sqrt_betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64, device="cpu")
    betas = (sqrt_betas**2).numpy()
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
