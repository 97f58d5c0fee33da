"""Finding and decoding training images.

Images are decoded with Pillow only (no OpenCV in the core install) and returned as float32 RGB tensors
in [0, 1], layout CHW, which is what every dataset and degradation in :mod:`diffir.data` consumes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from diffir.errors import DiffIRError, ImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageFolderError(DiffIRError):
    """A dataset folder is missing or holds no images.

    ``problem`` is the message without its parenthesised hint, so callers that know where the path came from
    (``diffir train``: the config key and environment variable) can give their own fix instead.
    """

    def __init__(self, folder: Path, problem: str, hint: str) -> None:
        super().__init__(f"{problem} ({hint})")
        self.folder, self.problem, self.hint = folder, problem, hint


def list_images(folder: str | Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files below ``folder`` (recursive, sorted) or a one-line :class:`ImageFolderError`."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        where = "no such folder" if root.is_absolute() else f"relative to the working directory {Path.cwd()}"
        if root.exists():
            where = "it is a file, not a folder"
        raise ImageFolderError(root, f"image folder not found: {root}", where)
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise ImageFolderError(root, f"no images in {root}", f"looked recursively for {', '.join(sorted(exts))}")
    return files


def read_image(path: str | Path) -> torch.Tensor:
    """Decode one image as a float32 RGB tensor (3, H, W) in [0, 1].

    Grey and palette images are expanded to RGB, alpha is dropped, 16-bit images keep their precision.
    Raises :class:`ImageError` when the file cannot be decoded.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit greyscale: scale by the 16-bit range instead of clipping to 8 bits.
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                arr = np.repeat(arr[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_gray(path: str | Path) -> torch.Tensor:
    """Decode one image as a float32 single-channel tensor (1, H, W) in [0, 1] (masks, kernels)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
            else:
                arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(f"cannot read image {path}: {exc}") from exc
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
