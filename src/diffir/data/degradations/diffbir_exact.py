"""DiffBIR's first-order degradation exactly as the official ``CodeformerDataset.__getitem__`` computes it.

One image at a time, in NumPy HWC layout and in **BGR** (the official code reads with OpenCV conventions), with
every random draw made explicit in :class:`FirstOrderParams` so that a recorded draw can be injected.  The
batched approximation used by ``diffir train`` is :mod:`diffir.data.degradations.diffbir`; this module is the
reference it approximates (README §4.8 of the parity vectors):

    blur (41×41 Gaussian, cv2.filter2D) → bilinear ↓ to int(w // r) → + Gaussian noise, clip →
    JPEG at int(q) → bilinear ↑ to (h, w)

OpenCV is not a dependency; each cv2 call is reproduced with NumPy, torch and Pillow (see the functions' comments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffir.data.jpeg import jpeg_roundtrip
from diffir.data.kernels import KERNEL_TYPES, filter2d, gaussian_family_kernels
from diffir.errors import ConfigError, ImageError

#: The stages :func:`degrade_first_order` returns, in pipeline order (the parity keys ``deg.<stage>``).
STAGES: tuple[str, ...] = ("gt_bgr", "kernel", "blurred", "down", "noisy", "jpeg", "up", "gt", "lq")


@dataclass(frozen=True)
class FirstOrderRanges:
    """Sampling ranges; the defaults are the released training configuration (spec B.9)."""

    kernel_size: int = 41
    kernel_list: tuple[str, ...] = ("iso", "aniso")
    kernel_prob: tuple[float, ...] = (0.5, 0.5)
    sigma: tuple[float, float] = (0.1, 12.0)
    rotation: tuple[float, float] = (-math.pi, math.pi)
    downsample: tuple[float, float] = (1.0, 12.0)
    noise: tuple[float, float] = (0.0, 15.0)
    jpeg: tuple[float, float] = (30.0, 100.0)
    gray_prob: float = 0.0
    prompt_drop_prob: float = 0.5


@dataclass(frozen=True)
class FirstOrderParams:
    """Every random value of one degradation.  ``noise`` is the standard-normal draw, (h', w', 3) in BGR order,
    or (h', w') when ``gray``; ``jpeg_quality`` is the raw uniform draw (truncated with ``int`` when used)."""

    kernel: str
    sigma_x: float
    sigma_y: float
    theta: float
    scale: float
    noise_sigma: float
    gray: bool
    noise: np.ndarray
    jpeg_quality: float
    drop_prompt: bool = False


def down_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h', w') = (int(h // r), int(w // r)): the official float floor division, then ``int``."""
    return int(height // scale), int(width // scale)


def sample_first_order_params(
    gen: np.random.Generator, height: int, width: int, ranges: FirstOrderRanges | None = None
) -> FirstOrderParams:
    """Draw the parameters in the official order: prompt drop, kernel kind, σx (then σy and θ for aniso), scale,
    noise σ, the gray-noise test (drawn even when ``gray_prob`` is 0), the noise map, JPEG quality."""
    r = ranges or FirstOrderRanges()
    drop_prompt = bool(gen.uniform() < r.prompt_drop_prob)
    # random.choices(kinds, weights): the first kind whose cumulative weight exceeds u·total
    cumulative = np.cumsum(np.asarray(r.kernel_prob, dtype=np.float64))
    pick = int(np.searchsorted(cumulative, gen.uniform() * cumulative[-1], side="right"))
    kernel = r.kernel_list[min(pick, len(r.kernel_list) - 1)]
    sigma_x = float(gen.uniform(*r.sigma))
    sigma_y, theta = sigma_x, 0.0
    if kernel == "aniso":
        sigma_y = float(gen.uniform(*r.sigma))
        theta = float(gen.uniform(*r.rotation))
    scale = float(gen.uniform(*r.downsample))
    noise_sigma = float(gen.uniform(*r.noise))
    gray = bool(gen.uniform() < r.gray_prob)
    h, w = down_size(height, width, scale)
    noise = gen.standard_normal((h, w) if gray else (h, w, 3))
    jpeg_quality = float(gen.uniform(*r.jpeg))
    return FirstOrderParams(kernel, sigma_x, sigma_y, theta, scale, noise_sigma, gray, noise, jpeg_quality,
                            drop_prompt)


def blur_kernel(params: FirstOrderParams, size: int = 41) -> np.ndarray:
    """The (size, size) float64 Gaussian, exp(−½ xᵀΣ⁻¹x) with Σ = R(θ)·diag(σx², σy²)·R(θ)ᵀ (iso: σx²·I)."""
    if params.kernel not in ("iso", "aniso"):
        raise ConfigError(f"DiffBIR kernel kind must be 'iso' or 'aniso', got {params.kernel!r}")
    iso = params.kernel == "iso"
    f64 = torch.float64
    k = gaussian_family_kernels(
        torch.tensor([size]), torch.tensor([KERNEL_TYPES.index(params.kernel)]),
        torch.tensor([params.sigma_x], dtype=f64), torch.tensor([params.sigma_x if iso else params.sigma_y], dtype=f64),
        torch.tensor([0.0 if iso else params.theta], dtype=f64), torch.tensor([1.0], dtype=f64), pad_to=size,
    )[0]
    # random_bivariate_Gaussian normalises the already normalised kernel once more (a last-bit change)
    return (k / k.sum()).numpy()


def _reflect101_index(n: int, pad: int) -> torch.Tensor:
    """Source indices of a BORDER_REFLECT_101 padding (…2 1 | 0 1 2 … n−1 | n−2 …), repeated as often as needed."""
    idx = torch.arange(-pad, n + pad)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


def cv2_filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.filter2D(image, -1, kernel)`` on HWC float32: float64 cross-correlation, reflect-101 borders.

    The image is padded here (exact reflect-101 even when it is smaller than the kernel radius); the centre of
    the same-size correlation of the padded image never reaches :func:`filter2d`'s own border."""
    h, w = image.shape[:2]
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float64)[None]
    x = x[:, :, _reflect101_index(h, ph)][:, :, :, _reflect101_index(w, pw)]
    y = filter2d(x, torch.from_numpy(kernel))[:, :, ph:ph + h, pw:pw + w]
    return _hwc(y.to(torch.float32))


def _cv2_linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and float32 weights of cv2's INTER_LINEAR along one axis.

    OpenCV places output pixel d at (d + 0.5)·(src / dst) − 0.5 computed in **double**; torch's bilinear does this
    in float32, which at 512 pixels moves a weight by up to 3e-5 (4e-5 in the output), enough to flip JPEG's
    8-bit rounding.  Outside the image the nearest pixel is taken with weight 1, as OpenCV clamps."""
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (1.0 / (dst / src)) - 0.5
    first = np.floor(pos).astype(np.int64)
    frac = pos - first
    outside = (first < 0) | (first >= src - 1)
    frac[outside] = 0.0
    first = np.clip(first, 0, src - 1)
    second = np.minimum(first + 1, src - 1)
    w1 = frac.astype(np.float32)
    return first, second, np.float32(1) - w1, w1


def cv2_resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), INTER_LINEAR)`` on HWC float32: half-pixel centres, no antialiasing,
    rows first then columns, each pass rounded to float32 (matches OpenCV to 1.2e-7)."""
    h, w = image.shape[:2]
    x0, x1, a0, a1 = _cv2_linear_taps(w, width)
    src = image.astype(np.float64)
    rows = (src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]).astype(np.float32).astype(np.float64)
    y0, y1, b0, b1 = _cv2_linear_taps(h, height)
    return (rows[y0] * b0[:, None, None] + rows[y1] * b1[:, None, None]).astype(np.float32)


def add_gaussian_noise(image: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """clip(image + float32(noise)·σ/255, 0, 1), in float32 as NumPy evaluates the official expression."""
    n = noise.astype(np.float32) * np.float32(sigma) / np.float32(255.0)
    if n.ndim == 2:  # gray noise: one map for the three channels
        n = np.repeat(n[..., None], 3, axis=2)
    return np.clip(image + n, 0, 1)


def cv2_jpeg(image_bgr: np.ndarray, quality: int) -> np.ndarray:
    """cv2 JPEG encode/decode of a BGR float image: OpenCV rounds ×255 half-to-even to uint8 and encodes with
    4:2:0 chroma; Pillow (libjpeg-turbo) with its defaults is the same codec, fed the RGB-reversed array."""
    rgb = _nchw(np.clip(image_bgr, 0, 1)[..., ::-1])
    return _hwc(jpeg_roundtrip(rgb, [int(quality)]))[..., ::-1].copy()


def degrade_first_order(
    gt_rgb_u8: np.ndarray, params: FirstOrderParams, kernel_size: int = 41
) -> dict[str, np.ndarray]:
    """Degrade an (H, W, 3) uint8 RGB image with the pinned ``params``; every stage of :data:`STAGES` is returned.

    ``gt`` is RGB in [−1, 1] and ``lq`` RGB in [0, 1], both (H, W, 3) float32; the other images are BGR."""
    if gt_rgb_u8.dtype != np.uint8 or gt_rgb_u8.ndim != 3 or gt_rgb_u8.shape[2] != 3:
        raise ImageError(f"the DiffBIR degradation needs an (H, W, 3) uint8 image, got {gt_rgb_u8.dtype} "
                         f"{gt_rgb_u8.shape}")
    h, w = gt_rgb_u8.shape[:2]
    dh, dw = down_size(h, w, params.scale)
    if dh < 1 or dw < 1:
        raise ImageError(f"a {w}x{h} image downsampled by {params.scale:g} has no pixels left")
    expected = (dh, dw) if params.gray else (dh, dw, 3)
    if params.noise.shape != expected:
        raise ConfigError(f"noise draw has shape {params.noise.shape}, expected {expected}")
    # the dataset divides in float64 and then casts: (u8 / 255.0).astype(float32)
    gt_bgr = (gt_rgb_u8[..., ::-1] / 255.0).astype(np.float32)
    kernel = blur_kernel(params, kernel_size)
    blurred = cv2_filter2d(gt_bgr, kernel)
    down = cv2_resize_linear(blurred, dh, dw)
    noisy = add_gaussian_noise(down, params.noise, params.noise_sigma)
    jpeg = cv2_jpeg(noisy, int(params.jpeg_quality))
    up = cv2_resize_linear(jpeg, h, w)  # float: the LQ is never re-quantised after this resize
    gt = (gt_bgr[..., ::-1] * 2 - 1).astype(np.float32)
    lq = np.ascontiguousarray(up[..., ::-1], dtype=np.float32)
    return {"gt_bgr": gt_bgr, "kernel": kernel, "blurred": blurred, "down": down, "noisy": noisy, "jpeg": jpeg,
            "up": up, "gt": np.ascontiguousarray(gt), "lq": lq}


def _nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def _hwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())
