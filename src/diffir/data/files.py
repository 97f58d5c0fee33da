"""Finding and decoding training images.

Files are found and decoded by :mod:`diffir.io.images` (the one image reader: EXIF orientation applied, 16-bit
kept) and returned as float32 tensors in [0, 1], layout CHW, which is what every dataset and degradation in
:mod:`diffir.data` consumes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from diffir.errors import DiffIRError, ImageError
from diffir.io import images
from diffir.io.images import IMAGE_EXTENSIONS, ImageFolderError, list_images

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderError", "SkippingReader", "list_images", "read_gray", "read_image"]

# PIL's RGB -> L weights (ITU-R 601-2 luma) in 16-bit fixed point, so a colour kernel or mask reads as before.
_LUMA_FIXED = (19595, 38470, 7471)


def _float_pixels(path: str | Path) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] scaled by the file's own depth (uint8 / 255, uint16 / 65535)."""
    pixels = images.read_image(path).pixels
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return pixels.astype(np.float32) / np.float32(top)


def read_image(path: str | Path) -> torch.Tensor:
    """Decode one image as a float32 RGB tensor (3, H, W) in [0, 1].

    Grey and palette images are expanded to RGB, alpha is dropped, 16-bit images keep their precision.
    Raises :class:`ImageError` when the file cannot be decoded.
    """
    arr = _float_pixels(path)
    channels = arr.shape[2]
    rgb = np.repeat(arr[..., :1], 3, axis=2) if channels in (1, 2) else arr[..., :3]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def read_gray(path: str | Path) -> torch.Tensor:
    """Decode one image as a float32 single-channel tensor (1, H, W) in [0, 1] (masks, kernels)."""
    pixels = images.read_image(path).pixels
    if pixels.shape[2] >= 3:  # luma as Pillow's convert("L"), in the file's depth
        r, g, b = (pixels[..., i].astype(np.uint64) for i in range(3))
        gray = (r * _LUMA_FIXED[0] + g * _LUMA_FIXED[1] + b * _LUMA_FIXED[2] + 0x8000) >> 16
    else:
        gray = pixels[..., 0]
    top = 65535.0 if pixels.dtype == np.uint16 else 255.0
    arr = gray.astype(np.float32) / np.float32(top)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


class SkippingReader:
    """Reads images by index and, when one is unreadable, warns once and moves on to the next index.

    A single corrupt file in a folder of 100k images should cost a warning, not a crashed training run.
    The set of bad files is per process (each DataLoader worker warns for itself).
    """

    def __init__(self, files: list[Path]):
        self.files = files
        self.bad: set[Path] = set()

    def read(self, index: int) -> tuple[torch.Tensor, Path, int]:
        """(image, path, index actually used) for ``index`` or the next readable file after it."""
        n = len(self.files)
        for step in range(n):
            i = (index + step) % n
            path = self.files[i]
            if path in self.bad:
                continue
            try:
                return read_image(path), path, i
            except ImageError as exc:
                self.bad.add(path)
                warnings.warn(f"skipping unreadable image: {exc}", RuntimeWarning, stacklevel=2)
        raise DiffIRError(f"none of the {n} images could be read (first: {self.files[0]})")
