"""DiffBIR's tiling helpers (spec §B.7): the Gaussian tile weights and the sliding windows."""

from __future__ import annotations

import numpy as np

#: Variance of the tile weights relative to the tile size (official: very peaked).
RELATIVE_VARIANCE = 0.01


def gaussian_weights(tile_width: int, tile_height: int) -> np.ndarray:
    """The (tile_height, tile_width) float64 mask, unnormalised: outer product of 1-D Gaussians in x/width and
    y/height with variance 0.01.  The x midpoint is (w − 1)/2 but the y midpoint is h/2 (official asymmetry,
    spec §B.14.6, reproduced)."""

    def profile(size: int, midpoint: float) -> list[float]:
        # numpy's exp/sqrt, not math's: they differ in the last bit and the official uses numpy's.
        return [np.exp(-(i - midpoint) * (i - midpoint) / (size * size) / (2 * RELATIVE_VARIANCE))
                / np.sqrt(2 * np.pi * RELATIVE_VARIANCE) for i in range(size)]

    x_probs = profile(tile_width, (tile_width - 1) / 2)
    y_probs = profile(tile_height, tile_height / 2)
    return np.outer(y_probs, x_probs)


def _starts(size: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, size - tile + 1, stride))
    if (size - tile) % stride != 0:
        starts.append(size - tile)  # a last window aligned to the border
    return starts


def sliding_windows(h: int, w: int, tile_size: int, tile_stride: int) -> list[tuple[int, int, int, int]]:
    """Windows (hi, hi_end, wi, wi_end), row-major; each side needs size ≥ tile_size."""
    if tile_size > h or tile_size > w or tile_stride < 1:
        raise ValueError(f"tile {tile_size} (stride {tile_stride}) does not fit a {h}x{w} input")
    return [(hi, hi + tile_size, wi, wi + tile_size)
            for hi in _starts(h, tile_size, tile_stride) for wi in _starts(w, tile_size, tile_stride)]
