"""Blur kernels for the Real-ESRGAN / DiffBIR degradation models, generated batch-wise in torch.

Kernel families (as documented for Real-ESRGAN), all centred on an odd ``k``×``k`` grid, normalised to sum
1 and zero-padded to ``pad_to``×``pad_to`` so that a batch of different sizes stacks into one tensor:

* ``iso`` / ``aniso``: Gaussian exp(-½ q), q = xᵀ Σ⁻¹ x, Σ = R(θ) diag(σx², σy²) R(θ)ᵀ (iso: σx = σy, θ = 0);
* ``generalized_*``: exp(-½ q^β) — β < 1 gives heavier tails, β > 1 flatter tops;
* ``plateau_*``: 1 / (1 + q^β) — a flat top with slow fall-off;
* ``sinc``: the ideal circular low-pass ω J₁(ω r) / (2π r) (ringing / overshoot artefacts).

Kernels are computed in float64 on the CPU (they are at most a few hundred numbers per image) and moved to
the images' device by the caller; image-sized work happens in :func:`filter2d`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffir.data import rng

KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)

_CPU = torch.device("cpu")


def _grid(pad_to: int) -> tuple[torch.Tensor, torch.Tensor]:
    half = pad_to // 2
    ax = torch.arange(-half, half + 1, dtype=torch.float64, device=_CPU)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _size_mask(sizes: torch.Tensor, pad_to: int) -> torch.Tensor:
    """(B, P, P) True inside each kernel's centred ``size``×``size`` support."""
    xx, yy = _grid(pad_to)
    half = (sizes.to(torch.float64) // 2)[:, None, None]
    return (xx.abs() <= half) & (yy.abs() <= half)


def _pick_sizes(kernel_range: Sequence[int], n: int, gen: torch.Generator) -> torch.Tensor:
    choices = torch.as_tensor(kernel_range, device=_CPU)
    return choices[torch.randint(len(choices), (n,), generator=gen, device=_CPU)]


def _normalise(k: torch.Tensor) -> torch.Tensor:
    return k / k.sum(dim=(-2, -1), keepdim=True)


def gaussian_family_kernels(
    sizes: torch.Tensor,
    kinds: torch.Tensor,
    sigma_x: torch.Tensor,
    sigma_y: torch.Tensor,
    theta: torch.Tensor,
    beta: torch.Tensor,
    pad_to: int = 21,
) -> torch.Tensor:
    """(B, pad_to, pad_to) float64 kernels; ``kinds`` indexes :data:`KERNEL_TYPES`.

    ``beta`` is ignored by the plain Gaussians.  Every argument is a length-B tensor.
    """
    xx, yy = _grid(pad_to)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    # rotate the coordinates into the kernel's principal axes: q = (u/σx)² + (v/σy)²
    u = c * xx + s * yy
    v = -s * xx + c * yy
    q = (u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2
    b = beta.to(torch.float64)[:, None, None]
    kinds = kinds[:, None, None]
    gaussian = torch.exp(-0.5 * q)
    generalized = torch.exp(-0.5 * q.pow(b))
    plateau = 1.0 / (1.0 + q.pow(b))
    k = torch.where(kinds <= 1, gaussian, torch.where(kinds <= 3, generalized, plateau))
    return _normalise(k * _size_mask(sizes, pad_to))


def sinc_kernels(sizes: torch.Tensor, omega: torch.Tensor, pad_to: int = 21) -> torch.Tensor:
    """(B, pad_to, pad_to) circular low-pass kernels with cut-off ``omega`` (radians/pixel)."""
    xx, yy = _grid(pad_to)
    r = torch.sqrt(xx**2 + yy**2)[None]
    w = omega.to(torch.float64)[:, None, None]
    wr = w * r
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    k = w * torch.special.bessel_j1(wr) / (2 * math.pi * safe_r)
    k = torch.where(r == 0, w**2 / (4 * math.pi), k)
    return _normalise(k * _size_mask(sizes, pad_to))


def delta_kernels(n: int, pad_to: int = 21) -> torch.Tensor:
    k = torch.zeros(n, pad_to, pad_to, dtype=torch.float64, device=_CPU)
    k[:, pad_to // 2, pad_to // 2] = 1.0
    return k


def _sample_beta(gen: torch.Generator, beta_range: Sequence[float], n: int) -> torch.Tensor:
    # Half of the draws below 1 and half above, so that heavy- and light-tailed shapes are equally likely
    # even though [β_min, 1] is much shorter than [1, β_max] (Real-ESRGAN's documented sampling).
    lo, hi = float(beta_range[0]), float(beta_range[1])
    below = rng.uniform(gen, lo, min(1.0, hi), n) if lo < 1 else rng.uniform(gen, lo, hi, n)
    above = rng.uniform(gen, max(1.0, lo), hi, n) if hi > 1 else below
    return torch.where(rng.bernoulli(gen, 0.5, n), below, above)


def sample_blur_kernels(
    n: int,
    gen: torch.Generator,
    *,
    kernel_range: Sequence[int] = (7, 9, 11, 13, 15, 17, 19, 21),
    kernel_list: Sequence[str] = KERNEL_TYPES,
    kernel_prob: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
    sigma_range: Sequence[float] = (0.2, 3.0),
    rotation_range: Sequence[float] = (-math.pi, math.pi),
    betag_range: Sequence[float] = (0.5, 4.0),
    betap_range: Sequence[float] = (1.0, 2.0),
    sinc_prob: float = 0.1,
    pad_to: int = 21,
) -> torch.Tensor:
    """``n`` random first/second-stage blur kernels (float64, CPU), one per image.

    With probability ``sinc_prob`` a sinc kernel (ω ~ U[π/3, π] for sizes < 13, else U[π/5, π]), otherwise a
    kernel of ``kernel_list`` drawn with ``kernel_prob``.
    """
    if any(k % 2 == 0 or k > pad_to for k in kernel_range):
        raise ValueError(f"kernel sizes must be odd and <= pad_to={pad_to}, got {list(kernel_range)}")
    unknown = [k for k in kernel_list if k not in KERNEL_TYPES]
    if unknown:
        raise ValueError(f"unknown kernel types {unknown}; choose from {KERNEL_TYPES}")
    sizes = _pick_sizes(kernel_range, n, gen)
    kinds_local = rng.choice(gen, kernel_prob, n)
    kinds = torch.as_tensor([KERNEL_TYPES.index(k) for k in kernel_list], device=_CPU)[kinds_local]
    sx = rng.uniform(gen, sigma_range[0], sigma_range[1], n)
    sy = rng.uniform(gen, sigma_range[0], sigma_range[1], n)
    theta = rng.uniform(gen, rotation_range[0], rotation_range[1], n)
    is_iso = kinds % 2 == 0
    sy = torch.where(is_iso, sx, sy)
    theta = torch.where(is_iso, torch.zeros_like(theta), theta)
    beta = torch.where(kinds <= 3, _sample_beta(gen, betag_range, n), _sample_beta(gen, betap_range, n))
    mixed = gaussian_family_kernels(sizes, kinds, sx, sy, theta, beta, pad_to)

    use_sinc = rng.bernoulli(gen, sinc_prob, n)
    omega = torch.where(
        sizes < 13, rng.uniform(gen, math.pi / 3, math.pi, n), rng.uniform(gen, math.pi / 5, math.pi, n)
    )
    sinc = sinc_kernels(sizes, omega, pad_to)
    return torch.where(use_sinc[:, None, None], sinc, mixed)


def sample_final_sinc(
    n: int,
    gen: torch.Generator,
    prob: float = 0.8,
    kernel_range: Sequence[int] = (7, 9, 11, 13, 15, 17, 19, 21),
    pad_to: int = 21,
) -> torch.Tensor:
    """The last-stage filter: a sinc (ω ~ U[π/3, π]) with probability ``prob``, else the identity."""
    sizes = _pick_sizes(kernel_range, n, gen)
    omega = rng.uniform(gen, math.pi / 3, math.pi, n)
    use = rng.bernoulli(gen, prob, n)
    return torch.where(use[:, None, None], sinc_kernels(sizes, omega, pad_to), delta_kernels(n, pad_to))


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=_CPU)


def gaussian_kernel(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """One isotropic (size, size) float32 Gaussian on ``device``."""
    k = gaussian_family_kernels(
        torch.tensor([size], device=_CPU), torch.tensor([0], device=_CPU), _f64([sigma]), _f64([sigma]),
        _f64([0.0]), _f64([1.0]), size,
    )[0]
    return k.to(device=device, dtype=torch.float32)


def filter2d(x: torch.Tensor, kernels: torch.Tensor, fft_above: int = 15 * 15) -> torch.Tensor:
    """Filter (B, C, H, W) with one (k, k) kernel or one kernel per image (B, k, k); same-size output.

    Cross-correlation with reflected borders (replicated when the image is smaller than the kernel
    radius).  Small kernels run as one grouped convolution; kernels with more than ``fft_above`` taps go
    through the FFT, which is several times faster for 21×21 Real-ESRGAN kernels on CPU and for
    large motion kernels (results agree to float rounding).
    """
    b, c, h, w = x.shape
    kernels = kernels.to(device=x.device, dtype=x.dtype)
    if kernels.dim() == 2:
        kernels = kernels.expand(b, *kernels.shape)
    kh, kw = kernels.shape[-2:]
    ph, pw = kh // 2, kw // 2
    mode = "reflect" if ph < h and pw < w else "replicate"
    padded = F.pad(x, (pw, kw - 1 - pw, ph, kh - 1 - ph), mode=mode)
    if kh * kw > fft_above:
        return _fft_correlate(padded, kernels, h, w)
    weight = kernels.repeat_interleave(c, dim=0)[:, None]  # (B*C, 1, kh, kw)
    out = F.conv2d(padded.reshape(1, b * c, *padded.shape[-2:]), weight, groups=b * c)
    return out.reshape(b, c, h, w)


def _fft_correlate(padded: torch.Tensor, kernels: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Valid cross-correlation of padded (B, C, H+kh-1, W+kw-1) images with per-image kernels via rFFT."""
    kh, kw = kernels.shape[-2:]
    size = padded.shape[-2:]
    # correlation = convolution with the flipped kernel; the valid part of the circular result starts at k-1
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernels.flip(-2, -1), s=size)[:, None]
    out = torch.fft.irfft2(spectrum, s=size)
    return out[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w].contiguous()
