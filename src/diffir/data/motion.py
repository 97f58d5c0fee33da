"""Motion-blur kernels: banks of real kernels from files and random camera-shake trajectories.

Real kernels: ``.png`` (grey image, any scale — divided by its sum) and ``.mat`` files (every 2-D array or
cell of 2-D arrays inside; v5 read natively, v7.3/HDF5 with ``h5py``).  Each kernel is centred on its
centre of mass when placed on a common canvas, so blurring does not shift the image relative to the GT.

Trajectories: a planar random walk in the spirit of Boracchi & Foi (2012) — constant speed, Gaussian
jitter of the velocity, a centripetal pull that keeps the shake bounded, and rare impulsive direction
reversals (shake) — rasterised with bilinear splatting and scaled to a random length.  Generated batch-wise
in torch (vectorised over the batch, sequential over the time steps).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diffir.data.files import read_gray
from diffir.data.matfile import MatFormatError, read_mat
from diffir.errors import DiffIRError

KERNEL_EXTENSIONS = (".png", ".mat")
_CPU = torch.device("cpu")


def _arrays(value) -> list[np.ndarray]:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [a for v in value.ravel() for a in _arrays(v)]
    if isinstance(value, np.ndarray) and value.ndim == 2 and min(value.shape) >= 3:
        return [value]
    return []


def load_kernels(folder: str | Path) -> list[torch.Tensor]:
    """All kernels found in ``folder`` (recursively), as float64 (k, k') tensors summing to 1.

    Unreadable files (e.g. v7.3 MAT without h5py) are skipped with a warning; no kernel at all is an error.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DiffIRError(f"kernel folder not found: {root}")
    kernels: list[torch.Tensor] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in KERNEL_EXTENSIONS):
        try:
            if path.suffix.lower() == ".png":
                arrays = [read_gray(path)[0].double().numpy()]
            else:
                arrays = [a for v in read_mat(path).values() for a in _arrays(v)]
        except (MatFormatError, OSError, ValueError) as exc:
            warnings.warn(f"skipping kernel file {path}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        for a in arrays:
            k = torch.from_numpy(np.clip(np.real(a), 0, None).astype(np.float64))
            if k.sum() > 0:
                kernels.append(k / k.sum())
    if not kernels:
        raise DiffIRError(f"no blur kernels (.png/.mat) could be read from {root}")
    return kernels


def center_on_canvas(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Place ``kernel`` on an odd ``size``×``size`` canvas with its centre of mass at the centre pixel.

    Mass falling outside the canvas is dropped and the result renormalised.
    """
    kh, kw = kernel.shape
    ys = torch.arange(kh, dtype=torch.float64, device=_CPU)
    xs = torch.arange(kw, dtype=torch.float64, device=_CPU)
    cy = int(round(float((kernel.sum(1) * ys).sum())))
    cx = int(round(float((kernel.sum(0) * xs).sum())))
    half = size // 2
    canvas = torch.zeros(size, size, dtype=torch.float64, device=_CPU)
    # canvas[i, j] = kernel[i - half + cy, j - half + cx]
    y0, x0 = max(0, half - cy), max(0, half - cx)
    y1, x1 = min(size, half - cy + kh), min(size, half - cx + kw)
    canvas[y0:y1, x0:x1] = kernel[y0 - half + cy : y1 - half + cy, x0 - half + cx : x1 - half + cx]
    return canvas / canvas.sum()


def random_trajectory_kernels(
    n: int,
    size: int = 31,
    length_range: Sequence[float] = (5.0, 25.0),
    steps: int = 256,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` random camera-shake kernels (float64, CPU) of shape (size, size), each summing to 1.

    Per kernel: initial direction U[0, 2π), jitter strength U[0, 1), centripetal pull U[0, 0.7), shake
    probability U[0, 0.05) per step; the path is then rescaled to a length (pixels) in ``length_range``
    (shrunk further if needed to fit the canvas) and centred on its mean position.
    """
    g = generator

    def u(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64, device=_CPU)

    angle = 2 * math.pi * u(n)
    vel = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # unit speed per step
    jitter = u(n)[:, None]
    pull = 0.7 * u(n)[:, None]
    shake_p = 0.05 * u(n)
    pos = torch.zeros(n, steps, 2, dtype=torch.float64, device=_CPU)
    for t in range(1, steps):
        noise = torch.randn(n, 2, generator=g, dtype=torch.float64, device=_CPU)
        # the centripetal term is relative to the path scale so it bends rather than stops the motion
        dv = jitter * noise - pull * pos[:, t - 1] / steps * 4
        shake = (u(n) < shake_p)[:, None]
        # an impulsive shake roughly reverses the motion with a random deviation
        turn = math.pi + (u(n) - 0.5)
        rot = torch.stack(
            [
                vel[:, 0] * torch.cos(turn) - vel[:, 1] * torch.sin(turn),
                vel[:, 0] * torch.sin(turn) + vel[:, 1] * torch.cos(turn),
            ],
            dim=1,
        )
        vel = torch.where(shake, rot, vel + 0.1 * dv)
        vel = vel / vel.norm(dim=1, keepdim=True).clamp(min=1e-9)
        pos[:, t] = pos[:, t - 1] + vel

    path_len = (pos[:, 1:] - pos[:, :-1]).norm(dim=2).sum(1)
    target = length_range[0] + (length_range[1] - length_range[0]) * u(n)
    pos = pos - pos.mean(dim=1, keepdim=True)
    factor = target / path_len
    extent = pos.abs().amax(dim=(1, 2)).clamp(min=1e-9)
    factor = torch.minimum(factor, (size // 2 - 1) / extent)
    pos = pos * factor[:, None, None] + size // 2

    # bilinear splatting of equally weighted samples (uniform exposure along the path)
    x, y = pos[..., 0], pos[..., 1]
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    canvas = torch.zeros(n, size * size, dtype=torch.float64, device=_CPU)
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).clamp(0, size - 1).long()
        yi = (y0 + dy).clamp(0, size - 1).long()
        canvas.scatter_add_(1, yi * size + xi, w)
    k = canvas.view(n, size, size)
    return k / k.sum(dim=(1, 2), keepdim=True)
