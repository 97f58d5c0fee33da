"""Find evaluation pairs on disk: paired LQ/GT folders, inpainting image/mask folders, or GT-only folders.

Recognised layouts of ``--data DIR`` (first match wins; ``--lq/--gt/--masks`` override):

==========================  ===========================  ===================================================
layout                      example                      pairs
==========================  ===========================  ===================================================
``HR/`` + ``LR_bicubic/X*`` Set5 (SwinIR test sets)      ``HR/baby.png`` ↔ ``LR_bicubic/X4/babyx4.png``
``HR/`` + ``LR/``           RealSR                       same file name
``sharp/`` + ``blur/``      GoPro-style pairs            same file name (GT = sharp)
``GT|gt/`` + ``LQ|lq/``     generic                      same file name
``images/`` + ``masks/``    inpainting fixtures          same stem (mask polarity: ``--mask-hole white|black``)
``HR/`` only or flat        Set14, B100, faces           GT only → needs ``--degrade``
==========================  ===========================  ===================================================

An LQ name may carry a scale suffix (``babyx4``, ``baby_x4``, ``baby_LR4``) that is ignored for matching.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffir.errors import ConfigError
from diffir.io.images import ImageFolderError, list_images

__all__ = ["EvalPair", "Layout", "detect_layout", "images_in", "read_rgb", "read_mask", "pair_files", "require_dir"]

# The shared data pack (``$DIFFIR_DATA``): benchmark folders relative to it, quoted in the "not a folder" hint.
SHARED_LAYOUT = ("sr/Set5", "sr/Set14", "sr/B100", "realsr/RealSR", "deblur/real_pairs", "inpaint/celeba_hq_256",
                 "inpaint/fixtures/MAT_CelebA-HQ")  # fmt: skip

_SCALE_SUFFIX = re.compile(r"(?:[_-]?x\d|[_-]?LR\d|[_-]?lr\d|[_-]?bicubic)$", re.IGNORECASE)


@dataclass
class EvalPair:
    """One evaluation sample: file paths (``lq``/``mask`` are None when they will be synthesised)."""

    name: str
    gt: Path | None
    lq: Path | None = None
    mask: Path | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Layout:
    kind: str  # "paired" | "inpaint" | "gt_only"
    gt_dir: Path | None
    lq_dir: Path | None = None
    mask_dir: Path | None = None
    description: str = ""


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (sorted), [] when it holds none: callers say what was expected."""
    try:
        return list_images(folder, recursive=False)
    except ImageFolderError:
        return []


def _sub(root: Path, *names: str) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _shared_matches(name: str) -> list[Path]:
    """Folders called ``name`` in ``$DIFFIR_DATA`` (up to three levels deep), for the hint only."""
    base = os.environ.get("DIFFIR_DATA")
    if not base or not name or not Path(base).is_dir():
        return []
    root = Path(base)
    hits = []
    for pattern in ("*", "*/*", "*/*/*"):
        hits += [p for p in sorted(root.glob(pattern)) if p.name.lower() == name.lower() and p.is_dir()]
    return hits[:3]


def require_dir(path: Path, flag: str = "--data") -> Path:
    """``path`` if it is a folder, else a one-line :class:`ConfigError` saying what was looked for and where
    benchmark folders usually are.  Names are never resolved: the hint only suggests a path."""
    if path.is_dir():
        return path
    what = "a file, not a folder" if path.exists() else "not a folder"
    msg = f"{flag} {path}: {what} (looked for {path.expanduser().absolute()})"
    matches = _shared_matches(path.name)
    if matches:
        msg += "; did you mean " + " or ".join(f"{flag} $DIFFIR_DATA/{m.relative_to(os.environ['DIFFIR_DATA'])}"
                                               for m in matches)  # fmt: skip
    elif flag == "--data":
        msg += ("; give the path of a benchmark folder, e.g. $DIFFIR_DATA/sr/Set14 with DIFFIR_DATA = the shared "
                "data folder (layout: " + ", ".join(SHARED_LAYOUT) + ")")  # fmt: skip
    raise ConfigError(msg)


def detect_layout(root: Path, scale: int | None = None, degrade: str | None = None) -> Layout:
    """Decide how to read ``root``; ``degrade`` forces GT-only use of the GT folder."""
    require_dir(root)
    gt = _sub(root, "HR", "GT", "gt", "sharp", "hr")
    if _sub(root, "images") and _sub(root, "masks"):
        return Layout("inpaint", root / "images", mask_dir=root / "masks", description="images/ + masks/")
    if gt is None:
        if not images_in(root):
            raise ConfigError(f"--data {root}: no images and no HR/, GT/, sharp/ or images/ sub-folder")
        gt = root
    if degrade:
        return Layout("gt_only", gt, description=f"{gt.name}/ (GT only) + --degrade {degrade}")
    lr_bicubic = _sub(root, "LR_bicubic")
    if lr_bicubic is not None:
        if scale is None:
            raise ConfigError(f"{root}: LR_bicubic/ holds several scales; the model's scale is unknown")
        lq = lr_bicubic / f"X{scale}"
        if not lq.is_dir():
            raise ConfigError(f"{root}: no LR_bicubic/X{scale}/ for a x{scale} model")
        return Layout("paired", gt, lq, description=f"{gt.name}/ + LR_bicubic/X{scale}/")
    lq = _sub(root, "LR", "LQ", "lq", "blur", "lr", "input")
    if lq is not None and gt != root:
        return Layout("paired", gt, lq, description=f"{gt.name}/ + {lq.name}/")
    return Layout("gt_only", gt, description=f"{gt.name}/ (GT only)")


def _key(stem: str) -> str:
    return _SCALE_SUFFIX.sub("", stem)


def pair_files(layout: Layout, limit: int | None = None) -> list[EvalPair]:
    """Match files of the layout's folders by name; unmatched files are reported, not silently dropped."""
    if layout.kind == "gt_only":
        pairs = [EvalPair(p.stem, p) for p in images_in(layout.gt_dir)]
    elif layout.kind == "inpaint":
        masks = {p.stem: p for p in images_in(layout.mask_dir)}
        pairs = [EvalPair(p.stem, p, mask=masks.get(p.stem)) for p in images_in(layout.gt_dir)]
        missing = [p.name for p in pairs if p.mask is None]
        if missing:
            raise ConfigError(f"{layout.mask_dir}: no mask for {', '.join(missing[:3])}")
    else:
        lqs = {_key(p.stem): p for p in images_in(layout.lq_dir)}
        pairs = []
        for gt in images_in(layout.gt_dir):
            lq = lqs.get(gt.stem) or lqs.get(_key(gt.stem))
            if lq is None:
                raise ConfigError(f"{layout.lq_dir}: no LQ image matching {gt.name}")
            pairs.append(EvalPair(gt.stem, gt, lq))
    if not pairs:
        raise ConfigError(f"{layout.gt_dir}: no images found")
    return pairs[:limit] if limit else pairs


def read_rgb(path: Path) -> np.ndarray:
    """uint8 ``HWC`` RGB (grey is replicated to three channels, as OpenCV-based evaluators read it)."""
    from diffir.io.images import read_image, to_8bit

    pixels = read_image(path).pixels
    if pixels.dtype != np.uint8:
        pixels = to_8bit(pixels)
    if pixels.shape[2] in (1, 2):
        pixels = np.repeat(pixels[..., :1], 3, axis=2)
    return np.ascontiguousarray(pixels[..., :3])


def read_mask(path: Path, hole: str = "white") -> np.ndarray:
    """Binary hole mask (uint8 HW, 1 = hole), read as ``diffir restore`` reads it (threshold 0.5, alpha-only
    holes, 16-bit files holding 8-bit values: :func:`diffir.pipelines.files.hole_map`).  ``hole='white'``:
    255 = hole (LaMa, edge-connect); ``'black'``: 0 = hole (MAT)."""
    from diffir.pipelines.files import read_mask as read_hole_map

    return read_hole_map(path, 0.5, hole).astype(np.uint8)
