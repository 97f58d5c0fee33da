"""Restore one image file into a folder: the step ``diffir restore`` repeats per input and ``diffir serve`` runs
per job, so both give the same checks, the same one-line errors and the same faithful output (the input's format,
bit depth, alpha and colour profile, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from diffir.errors import DiffIRError, ImageError
from diffir.io.images import DEFAULT_MAX_PIXELS, image_size, read_image, write_image
from diffir.pipelines.files import output_path, read_mask

if TYPE_CHECKING:
    from diffir.pipelines.restorer import Restorer


def restore_file(restorer: Restorer, path: Path, out_dir: Path, *, mask: Path | None = None, suffix: str = "out",
                 ext: str = "auto", quality: int = 95, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 claimed: dict[Path, Path] | None = None) -> Path:
    """Read ``path``, restore it (with the holes of the ``mask`` file, read with the restorer's threshold and hole
    colour) and write ``<out_dir>/<stem>_<suffix>.<ext>``; returns that path.

    The output size is checked from the header before decoding.  ``claimed`` maps the outputs written so far in
    this run to their inputs: a second input with the same output name is refused instead of overwriting."""
    width, height = image_size(path, max_pixels=max_pixels)  # the header only: refuse huge work before decoding
    restorer.check_output_size(height, width, str(path))
    record = read_image(path, max_pixels=max_pixels)
    target = output_path(path, out_dir, suffix, ext, has_alpha=record.pixels.shape[2] in (2, 4))
    if claimed is not None and target in claimed:
        raise DiffIRError(f"{path}: output {target.name} was already written for {claimed[target]} (same file "
                          "name); restore these inputs to separate -o folders or rename one")
    holes = None
    if mask is not None:
        hole_map = read_mask(mask, restorer.mask_threshold, restorer.mask_hole, max_pixels)
        (mh, mw), (ih, iw) = hole_map.shape, record.pixels.shape[:2]
        check_mask_size(path, mask, (mw, mh), (iw, ih))
        # Holes are decided (alpha, 16-bit, polarity) by read_mask; handed over in the Restorer's convention.
        holes = hole_map if restorer.mask_hole == "white" else ~hole_map
    result = restorer.restore(record.pixels, mask=holes)
    write_image(target, result, quality=quality, icc_profile=record.icc_profile)
    return target


def check_mask_size(path: Path, mask: Path, mask_size: tuple[int, int], image_size: tuple[int, int]) -> None:
    """One line naming both files when a mask's (width, height) is not its image's."""
    if mask_size != image_size:
        (mw, mh), (iw, ih) = mask_size, image_size
        raise ImageError(f"{path}: mask {mask} is {mw}x{mh} but the image is {iw}x{ih}; "
                         "give a mask of the image's size")
