"""Which files to restore, which mask goes with which image, and where each result goes."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from diffir.errors import DiffIRError, ImageError

#: ``--ext auto``: the input's own format where we can write it, else PNG.
_AUTO_EXT = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp", ".tif": ".tif", ".tiff": ".tif"}
_NO_ALPHA = {".jpg", ".jpeg", ".bmp"}
_SKIP_NAMES = {"thumbs.db", "desktop.ini"}


def collect_inputs(spec: str) -> list[Path]:
    """A file, every (non-hidden) file of a folder, or the files matching a glob pattern; sorted."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.is_file() and _visible(p)]
        if not files:
            subfolders = sum(1 for p in path.iterdir() if p.is_dir() and _visible(p))
            if subfolders:
                pattern = f"{str(path).rstrip('/')}/**/*.png"
                raise DiffIRError(f"input folder {path} has no files, only {subfolders} subfolder(s); the search is "
                                  f"not recursive: pass a quoted glob such as '{pattern}' or one subfolder")
            raise DiffIRError(f"input folder {path} is empty")
        return files
    if glob.has_magic(spec):
        files = [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
        files = [p for p in files if p.is_file() and _visible(p)]
        if not files:
            raise DiffIRError(f"no file matches {spec!r}")
        return files
    raise DiffIRError(f"input not found: {spec}")


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
