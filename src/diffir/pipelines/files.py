"""Which files to restore, which mask goes with which image (and where its holes are), where each result goes."""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import numpy as np

from diffir.errors import DiffIRError, ImageError, describe_os_error
from diffir.io.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, read_image

#: ``--ext auto``: the input's own format where we can write it, else PNG.
_AUTO_EXT = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp", ".tif": ".tif", ".tiff": ".tif"}
_NO_ALPHA = {".jpg", ".jpeg", ".bmp"}
_SKIP_NAMES = {"thumbs.db", "desktop.ini"}
#: Names that make a folder an image folder (GIF too: restore reads its first frame).
_IMAGE_NAMES = {*IMAGE_EXTENSIONS, ".gif"}


def collect_inputs(spec: str) -> list[Path]:
    """A file, every (non-hidden) file of a folder, or the files matching a glob pattern; sorted."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        entries = _folder_entries(path)
        files = [p for p in entries if p.is_file() and _visible(p)]
        if not files:
            subfolders = sum(1 for p in entries if p.is_dir() and _visible(p))
            if subfolders:
                pattern = f"{str(path).rstrip('/')}/**/*.png"
                raise DiffIRError(f"input folder {path} has no files, only {subfolders} subfolder(s); the search is "
                                  f"not recursive: pass a quoted glob such as '{pattern}' or one subfolder")
            raise DiffIRError(f"input folder {path} is empty")
        if not any(p.suffix.lower() in _IMAGE_NAMES for p in files):
            # Every file would fail: one line for the folder (exit 2), not one per file.
            raise DiffIRError(f"input folder {path}: none of its {len(files)} file(s) is named like an image (e.g. "
                              f"{files[0].name}; looked for {', '.join(sorted(_IMAGE_NAMES))}); pass the files "
                              "themselves or a quoted glob to restore other names")
        return files
    if glob.has_magic(spec):
        files = [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
        files = [p for p in files if p.is_file() and _visible(p)]
        if not files:
            raise DiffIRError(f"no file matches {spec!r}")
        return files
    raise DiffIRError(f"input not found: {spec}")


def _folder_entries(folder: Path) -> list[Path]:
    """The sorted entries of an input folder; an unreadable folder is one line naming it."""
    try:
        return sorted(folder.iterdir())
    except PermissionError:
        raise DiffIRError(f"{folder}: permission denied; check the folder's permissions (it must be readable "
                          "and searchable: chmod u+rx)") from None
    except OSError as exc:
        raise DiffIRError(describe_os_error(exc, folder)) from None


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower() not in _SKIP_NAMES


def find_mask(image: Path, mask_spec: Path) -> Path:
    """The mask of ``image``: ``mask_spec`` itself if it is a file, else in that folder ``<stem>.*``,
    ``<stem>_mask.*`` or ``<stem>_mask*.*`` (the LaMa/DiffIR naming), first match in sorted order.

    Only names that start with the *whole* stem followed by ``.`` or ``_mask`` match: the mask of ``face1`` is
    never ``face10_mask.png``."""
    if mask_spec.is_file():
        return mask_spec
    if not mask_spec.is_dir():
        raise DiffIRError(f"mask not found: {mask_spec}")
    stem = glob.escape(image.stem)
    for pattern in (f"{stem}.*", f"{stem}_mask.*", f"{stem}_mask*.*"):
        hits = [p for p in sorted(mask_spec.glob(pattern)) if p.is_file() and p.resolve() != image.resolve()]
        if hits:
            return hits[0]
    raise ImageError(f"{image}: no mask in {mask_spec} (looked for {image.stem}.*, {image.stem}_mask.* and "
                     f"{image.stem}_mask*.*, e.g. {image.stem}.png, {image.stem}_mask001.png)")


def is_earlier_output(image: Path, out_dir: Path, suffix: str) -> bool:
    """True for ``<x>_<suffix>.*`` inputs when ``out_dir`` is the input's folder or inside it: restoring into the
    input folder twice must not restore the first run's outputs again (``a_out_out.png``)."""
    if not suffix or not image.stem.endswith(f"_{suffix}"):
        return False
    folder, out = image.parent.resolve(), out_dir.resolve()
    return out == folder or folder in out.parents


def output_path(image: Path, out_dir: Path, suffix: str, ext: str, has_alpha: bool = False) -> Path:
    """``<out_dir>/<stem>[_<suffix>].<ext>``; ``ext="auto"`` keeps the input format (PNG when it cannot be
    written or cannot hold the alpha channel)."""
    if ext == "auto":
        new_ext = _AUTO_EXT.get(image.suffix.lower(), ".png")
        if has_alpha and new_ext in _NO_ALPHA:
            new_ext = ".png"
    else:
        new_ext = "." + ext.lower().lstrip(".")
    name = f"{image.stem}_{suffix}" if suffix else image.stem
    return out_dir / f"{name}{new_ext}"


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove that a file can be written there (fail before loading a model)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffIRError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    probe = folder / f".diffir-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DiffIRError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------------------ masks
def read_mask(path: Path, threshold: float = 0.5, hole: str = "white",
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The (H, W) bool hole map (True = hole) of a mask file; warns (naming the file) when it selects no pixel
    or every pixel, since both leave the image as it was or replace all of it.  See :func:`hole_map`."""
    holes, rule = hole_map(read_image(path, max_pixels=max_pixels).pixels, threshold, hole)
    if not holes.any():
        warnings.warn(f"{path}: the mask selects no pixel as a hole ({rule}); the image comes back unchanged: "
                      f"check --mask-hole/--mask-threshold or paint the holes {hole}", stacklevel=2)
    elif holes.all():
        warnings.warn(f"{path}: the mask selects every pixel as a hole ({rule}); the whole image is generated: "
                      "check --mask-hole/--mask-threshold", stacklevel=2)
    return holes


def hole_map(pixels: np.ndarray, threshold: float = 0.5, hole: str = "white") -> tuple[np.ndarray, str]:
    """(bool hole map, the rule used, in words) of (H, W, C) uint8/uint16 mask pixels.

    * The value of a pixel is the mean of its colour channels scaled to 0..1; a hole is a value above
      ``threshold`` (``hole="white"``) or at or below it (``"black"``).
    * A mask with alpha whose colour is the same everywhere (holes only in the alpha channel) uses the alpha
      instead: a transparent pixel is a hole (the convention of image-editing masks: the hole is erased), i.e.
      the alpha is read as a gray value with transparent = white, opaque = black.  ``hole="black"`` flips it
      (opaque, painted pixels are the holes).
    * A 16-bit file whose values are all at most 255 holds 8-bit values (some tools save masks so): it is
      scaled by 255, not 65535, else its white (255) would read as 0.004, i.e. no hole at all.
    * Likewise a mask whose values are all 0 or 1 is a label map (a numpy ``mask.astype(np.uint8)``, some
      datasets' PNGs): 1 is white, not 1/255, which would read as no hole and give the image back untouched.
    """
    channels = pixels.shape[2]
    colour = pixels[..., : channels - 1] if channels in (2, 4) else pixels
    source, what = colour, "mean of the colour channels"
    if channels in (2, 4):
        alpha = pixels[..., channels - 1]
        if (colour == colour[:1, :1]).all() and not (alpha == alpha.flat[0]).all():
            source, what = alpha[..., None], "transparency of the alpha channel"
    peak = source.max()
    top = 1.0 if peak == 1 else 65535.0 if source.dtype == np.uint16 and peak > 255 else 255.0
    value = source.mean(axis=2, dtype=np.float32) / np.float32(top)
    if source is not colour:
        value = 1 - value  # transparency: a transparent pixel reads as white
    if hole == "white":
        return value > threshold, f"hole = {what} above {threshold:g}"
    return value <= threshold, f"hole = {what} at or below {threshold:g}"
