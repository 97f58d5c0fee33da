"""Progressive patch/batch training (deblurring recipe, specs §5.3).

The loader always yields the largest patches at the largest batch; each iteration the trainer asks the
schedule for the current (batch, patch) and cuts the batch down with :func:`cut_batch`: a random subset of
items and one random window shared by all items and by LQ and GT, so pairs stay aligned.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import torch

from diffir.data import rng


class ProgressiveSchedule:
    """Stage j covers iterations (Σ iters[:j], Σ iters[:j+1]] (1-based); beyond the end the last stage holds.

    >>> s = ProgressiveSchedule([92_000, 80_000], batch_sizes=[8, 4], patch_sizes=[192, 256])
    >>> s.at(92_000), s.at(92_001)
    ((8, 192), (4, 256))
    """

    def __init__(self, iters: Sequence[int], batch_sizes: Sequence[int], patch_sizes: Sequence[int]):
        if not (len(iters) == len(batch_sizes) == len(patch_sizes)) or not iters:
            raise ValueError("iters, batch_sizes and patch_sizes must be non-empty and of equal length")
        self.iters = list(iters)
        self.batch_sizes = list(batch_sizes)
        self.patch_sizes = list(patch_sizes)
        self.bounds = list(itertools.accumulate(self.iters))

    @property
    def max_batch(self) -> int:
        return max(self.batch_sizes)

    @property
    def max_patch(self) -> int:
        return max(self.patch_sizes)

    def stage(self, iteration: int) -> int:
        """Index of the first stage whose cumulative iteration count is >= ``iteration``."""
        return min(bisect.bisect_left(self.bounds, iteration), len(self.bounds) - 1)

    def at(self, iteration: int) -> tuple[int, int]:
        j = self.stage(iteration)
        return self.batch_sizes[j], self.patch_sizes[j]


def cut_batch(
    batch: dict[str, torch.Tensor],
    batch_size: int,
    patch_size: int,
    generator: torch.Generator | None = None,
    scales: dict[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Random subset of ``batch_size`` items and one shared random ``patch_size`` window of every tensor.

    The window is chosen on the GT grid (top = ⌊(P − p)·U⌋, same for left); keys listed in ``scales`` (e.g.
    ``{"lq": 4}`` for SR) are cut at the corresponding position and size divided by their factor.
    Non-tensor entries (paths) are subset alongside.  Keys with no spatial dims pass through subset only.
    """
    scales = scales or {}
    gen = rng.param_generator(generator)
    tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    ref = tensors.get("gt", next(iter(tensors.values())))
    n = ref.shape[0]
    keep = torch.arange(n, device="cpu")
    if batch_size < n:
        keep = torch.randperm(n, generator=gen, device="cpu")[:batch_size].sort().values
    crop = ref.dim() >= 3 and patch_size < min(ref.shape[-2:])
    top = left = 0
    if crop:
        # top = ⌊(P − p)·U⌋ on a grid of the largest scale factor, so scaled keys are cut at the same place
        step = max(scales.values(), default=1)
        top = step * int((ref.shape[-2] - patch_size) // step * float(rng.uniform(gen, 0, 1, 1)))
        left = step * int((ref.shape[-1] - patch_size) // step * float(rng.uniform(gen, 0, 1, 1)))
    out: dict = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v[keep.to(v.device)]
            if crop and v.dim() >= 3:
                s = scales.get(k, 1)
                v = v[..., top // s : (top + patch_size) // s, left // s : (left + patch_size) // s]
            out[k] = v
        elif isinstance(v, (list, tuple)) and len(v) == n:
            out[k] = type(v)(v[i] for i in keep.tolist())
        else:
            out[k] = v
    return out
