"""Pad an image up to the network's size multiple and crop the result back exactly.

The official scripts reflect-pad bottom/right (``F.pad(..., mode="reflect")``), which fails when the pad is
not smaller than the image (a 1×1 or 5×3 input).  Here the reflection is computed as an index map that keeps
bouncing between the edges, so any size works, and it equals torch's reflect padding whenever that is defined.
"""

from __future__ import annotations

import torch


def reflect_indices(size: int, padded: int) -> torch.Tensor:
    """Source index of every position ``0..padded-1`` for reflect padding (edge not repeated) at the end."""
    idx = torch.arange(padded)
    if size == 1:
        return torch.zeros(padded, dtype=torch.long)
    period = 2 * (size - 1)
    idx = idx % period
    return torch.where(idx < size, idx, period - idx)


def padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the last two dims of ``x`` (bottom/right) to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, multiple), padded_size(w, multiple)
    if ph != h:
        x = x.index_select(-2, reflect_indices(h, ph).to(x.device))
    if pw != w:
        x = x.index_select(-1, reflect_indices(w, pw).to(x.device))
    return x


def crop_to(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Top-left ``height × width`` of the last two dims (undoes bottom/right padding, times the scale)."""
    return y[..., :height, :width]
