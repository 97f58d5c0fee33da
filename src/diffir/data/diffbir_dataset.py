"""DiffBIR's stage-1 / stage-2 training set (the official ``CodeformerDataset``) with reproducible degradations.

Each item is an HQ image cropped to ``out_size`` as the official dataset does, degraded by the exact first-order
pipeline of :mod:`diffir.data.degradations.diffbir_exact`.  Every random choice of item ``i`` (crop, prompt drop,
degradation) comes from ``numpy.random.default_rng([seed, epoch, i])``, so an item is the same pair in any worker
and any run; :meth:`DiffBIRDataset.set_epoch` gives fresh degradations per epoch, as the official global RNG does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from diffir.data.degradations.diffbir_exact import FirstOrderRanges, degrade_first_order, sample_first_order_params
from diffir.data.files import SkippingReader, list_images
from diffir.errors import ConfigError, DiffIRError, ImageError

CROP_TYPES: tuple[str, ...] = ("none", "center", "random")


def _box_halve_while(image: Image.Image, limit: int) -> Image.Image:
    # guided-diffusion's crops first halve with a BOX filter while the short side is ≥ 2·limit (cheap, alias-free)
    while min(image.size) >= 2 * limit:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    return image


def _bicubic_short_side(image: Image.Image, short: int) -> np.ndarray:
    scale = short / min(image.size)
    return np.asarray(image.resize(tuple(round(s * scale) for s in image.size), resample=Image.Resampling.BICUBIC))


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """BOX-halve while the short side is ≥ 2·size, bicubic-resize the short side to ``size``, take the centre."""
    arr = _bicubic_short_side(_box_halve_while(Image.fromarray(image), size), size)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def random_crop(image: np.ndarray, size: int, gen: np.random.Generator, min_crop_frac: float = 0.7,
                max_crop_frac: float = 1.0) -> np.ndarray:
    """Rescale so the short side is a random length in [size/max_frac, size/min_frac], then crop at random."""
    short = int(gen.integers(math.ceil(size / max_crop_frac), math.ceil(size / min_crop_frac) + 1))
    arr = _bicubic_short_side(_box_halve_while(Image.fromarray(image), short), short)
    top = int(gen.integers(arr.shape[0] - size + 1))
    left = int(gen.integers(arr.shape[1] - size + 1))
    return arr[top:top + size, left:left + size]


def read_file_list(path: str | Path) -> list[Path]:
    """Image paths of a DiffBIR file list, one per line; relative paths are taken from the list's folder."""
    path = Path(path)
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [p if p.is_absolute() else path.parent / p for p in (Path(line) for line in lines if line)]


def _image_files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        return list_images(source) if Path(source).is_dir() else read_file_list(source)
    return [Path(p) for p in source]


class DiffBIRDataset(Dataset):
    """HQ images (a folder, a file list or a sequence of paths) → ``{"gt", "lq", "prompt", "path"}``.

    ``gt`` is (3, H, W) RGB in [−1, 1], ``lq`` (3, H, W) RGB in [0, 1], both float32 and ``out_size``² unless
    ``crop_type`` is "none" with ``out_size=None``.  ``crop_type``: "none" (the image must already be
    ``out_size``², as the official assertion), "center" or "random" (guided-diffusion crops; random uses
    ``min_crop_frac``).  File lists carry no prompts, so ``prompt`` is always "" (its drop draw is still made).
    """

    def __init__(self, source: str | Path | Sequence[str | Path], out_size: int | None = 512,
                 crop_type: str = "center", seed: int = 0, ranges: FirstOrderRanges | None = None,
                 min_crop_frac: float = 0.7) -> None:
        if crop_type not in CROP_TYPES:
            raise ConfigError(f"crop_type must be one of {', '.join(CROP_TYPES)}, got {crop_type!r}")
        if out_size is None and crop_type != "none":
            raise ConfigError(f"crop_type {crop_type!r} needs an out_size")
        self.files = _image_files(source)
        if not self.files:
            raise DiffIRError(f"no images listed in {source}")
        missing = [p for p in self.files if not p.is_file()]
        if missing:
            raise ImageError(f"{len(missing)} listed images do not exist (first: {missing[0]})")
        self.out_size, self.crop_type, self.seed = out_size, crop_type, int(seed)
        self.ranges = ranges or FirstOrderRanges()
        self.min_crop_frac = min_crop_frac
        self.epoch = 0
        self._reader = SkippingReader(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Draw new crops and degradations (item i of epoch e is still the same pair in every run)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _hq_u8(self, index: int) -> tuple[np.ndarray, Path]:
        image, path, _ = self._reader.read(index)
        # the reader gives u8/255 (or u16/65535) in float32: ×255 and rounding returns the 8-bit values exactly
        return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), path

    def __getitem__(self, index: int) -> dict[str, Any]:
        gen = self.generator(index)
        hq, path = self._hq_u8(index)
        size = self.out_size
        if self.crop_type == "center":
            hq = center_crop(hq, size)
        elif self.crop_type == "random":
            hq = random_crop(hq, size, gen, self.min_crop_frac)
        elif size is not None and hq.shape[:2] != (size, size):
            raise ImageError(f"{path} is {hq.shape[1]}x{hq.shape[0]}, crop_type 'none' needs {size}x{size}")
        params = sample_first_order_params(gen, hq.shape[0], hq.shape[1], self.ranges)
        out = degrade_first_order(hq, params, self.ranges.kernel_size)
        return {
            "gt": torch.from_numpy(out["gt"].transpose(2, 0, 1).copy()),
            "lq": torch.from_numpy(out["lq"].transpose(2, 0, 1).copy()),
            "prompt": "",  # the official file lists hold no prompts; params.drop_prompt would empty it anyway
            "path": str(path),
        }
