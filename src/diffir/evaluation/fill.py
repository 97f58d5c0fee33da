"""A classical inpainting baseline: coarse-to-fine harmonic (membrane) fill.

Each hole pixel ends up (approximately) equal to the mean of its four neighbours, with the known pixels as
boundary values — the smoothest possible interpolation of the surrounding colours (a discrete Laplace
equation).  Plain Jacobi iterations converge very slowly over large holes, so the equation is first solved on
a pyramid of mask-weighted 2× reductions and each level starts from the upsampled coarser solution.
No OpenCV and no learning; this is the "what does a smooth fill score" reference row of the table.
"""

from __future__ import annotations

import numpy as np

__all__ = ["harmonic_fill"]


def _reduce(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = (values.shape[0] + 1) // 2 * 2, (values.shape[1] + 1) // 2 * 2
    v = np.zeros((h, w, values.shape[2]))
    k = np.zeros((h, w))
    v[: values.shape[0], : values.shape[1]] = values * weights[..., None]
    k[: weights.shape[0], : weights.shape[1]] = weights
    vs = v.reshape(h // 2, 2, w // 2, 2, -1).sum(axis=(1, 3))
    ks = k.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
    return np.where(ks[..., None] > 0, vs / np.maximum(ks, 1e-12)[..., None], 0.0), (ks > 0).astype(np.float64)


def _relax(x: np.ndarray, hole: np.ndarray, iterations: int) -> np.ndarray:
    for _ in range(iterations):
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4.0
        x = np.where(hole[..., None], avg, x)
    return x


def _solve(values: np.ndarray, known: np.ndarray, iterations: int) -> np.ndarray:
    hole = known == 0
    if not hole.any():
        return values
    if known.sum() == 0:
        return np.full_like(values, 0.5)
    if min(values.shape[:2]) <= 4:
        mean = (values * known[..., None]).sum(axis=(0, 1)) / known.sum()
        start = np.where(hole[..., None], mean, values)
    else:
        coarse = _solve(*_reduce(values, known), iterations)
        up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[: values.shape[0], : values.shape[1]]
        start = np.where(hole[..., None], up, values)
    return _relax(start, hole, iterations)


def harmonic_fill(image: np.ndarray, hole: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Fill ``hole`` (HW, nonzero = missing) of a uint8 ``HWC`` image; known pixels are returned unchanged."""
    img = np.asarray(image)
    mask = np.asarray(hole).astype(bool)
    values = img.astype(np.float64) / 255.0
    filled = _solve(values, (~mask).astype(np.float64), iterations)
    out = np.where(mask[..., None], np.clip(np.rint(filled * 255.0), 0, 255), img)
    return out.astype(np.uint8)
