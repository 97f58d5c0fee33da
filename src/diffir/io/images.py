"""Image files in and out, without surprises.

Pixels are exchanged as ``(H, W, C)`` numpy arrays in the file's own depth (``uint8`` or ``uint16``) with
C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), so nothing is lost between reading and writing:

* 8- and 16-bit PNG/TIFF keep their depth.  Pillow decodes 16-bit *colour* PNG/TIFF to 8 bits, so those
  (and only those) go through OpenCV (the ``[images]`` extra); a clear error says so if missing.
* EXIF orientation is applied on reading (the output is written upright, without the tag).
* A decompression-bomb limit (``max_pixels``) is checked from the header, before any pixel is decoded.
* Only the first frame of an animated (GIF/APNG/WebP) or multi-page (TIFF) file is read, with a warning.
* An operating-system failure (permission denied, I/O error) is reported as such, never as a damaged file.
* Writes are atomic: a hidden temporary file in the target folder, renamed over the target when complete, so
  an interrupted run never leaves a truncated image behind.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffir.errors import DiffIRError, ImageError, describe_os_error
from diffir.install import pip_extra
from diffir.io.atomic import atomic_path

#: Default decompression-bomb limit: 100 megapixels (a 4K frame is 8.3 MP).  ``None`` or 0 disables it.
DEFAULT_MAX_PIXELS = 100_000_000
#: Extensions of the image files a folder is searched for (restore folders, training sets, benchmarks).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Extensions ``write_image`` knows, mapped to Pillow format names.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
           ".bmp": "BMP"}
#: Formats that can store alpha / 16 bits.
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_DEEP_FORMATS = {"PNG", "TIFF"}
_CV2_HINT = f"install OpenCV for 16-bit colour images: {pip_extra('images')}"
_PIL_LIMIT_LOCK = threading.Lock()
#: Source modes whose ICC profile still describes the decoded pixels (gray stays gray, RGB stays RGB).
_ICC_MODES = {"L", "LA", "RGB", "RGBA", "P", "PA", "I;16", "I;16L", "I;16B", "I;16N", "I", "1"}


@dataclass
class ImageRecord:
    """Decoded pixels plus what is needed to write a faithful result (format, colour profile)."""

    pixels: np.ndarray  # (H, W, C) uint8 or uint16, C in {1, 2, 3, 4}
    format: str  # Pillow format name of the source ("PNG", "JPEG", ...)
    icc_profile: bytes | None = None

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8


# ------------------------------------------------------------------------------------------------ folders
class ImageFolderError(DiffIRError):
    """A dataset folder is missing or holds no images.

    ``problem`` is the message without its parenthesised hint, so callers that know where the path came from
    (``diffir train``: the config key and environment variable) can give their own fix instead.
    """

    def __init__(self, folder: Path, problem: str, hint: str) -> None:
        super().__init__(f"{problem} ({hint})")
        self.folder, self.problem, self.hint = folder, problem, hint


def list_images(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS, *,
                recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (sorted; below it too when ``recursive``) or a one-line
    :class:`ImageFolderError` when the folder is missing or holds none.

    Hidden files are left out: they are editor/OS companions (``._x.png``) or an interrupted run's temporaries."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        where = "no such folder" if root.is_absolute() else f"relative to the working directory {Path.cwd()}"
        if root.exists():
            where = "it is a file, not a folder"
        raise ImageFolderError(root, f"image folder not found: {root}", where)
    exts = {e.lower() for e in extensions}
    entries = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in entries if p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file())
    if not files:
        how = "recursively " if recursive else ""
        raise ImageFolderError(root, f"no images in {root}", f"looked {how}for {', '.join(sorted(exts))}")
    return files


# ------------------------------------------------------------------------------------------------ reading
def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageRecord:
    """Decode an image file (upright, native depth).  Raises :class:`ImageError` with a one-line reason.

    An animated or multi-page file gives its first frame and a warning naming the file."""
    path = Path(path)
    with _decode_errors(path), _open(path, max_pixels) as im:
        deep_colour = _is_16bit_colour(im)  # before getexif(), which may decode a PNG and drop im.tile
        orientation = _exif_orientation(im)
        # A CMYK/Lab profile does not describe the RGB pixels we decode them to: drop it.
        icc = im.info.get("icc_profile") if im.mode in _ICC_MODES else None
        fmt = im.format or "PNG"
        if deep_colour:
            im.load()  # Pillow first: a truncated file raises here, before libpng prints to stderr
            pixels = _read_with_cv2(path)
        else:
            im.load()
            pixels = pil_to_array(im)
        frames = _frame_count(im)
        if fmt == "PNG":
            _verify_png(path)
    if frames > 1:
        what = "multi-page image with {} pages; only the first page" if fmt == "TIFF" else \
            "animated image with {} frames; only the first frame"
        warnings.warn(f"{path}: {what.format(frames)} is restored", stacklevel=2)
    return ImageRecord(_apply_orientation(pixels, orientation), fmt, icc)


def image_size(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding pixels (same checks and errors as reading)."""
    path = Path(path)
    with _decode_errors(path), _open(path, max_pixels) as im:
        return im.size


@contextmanager
def _decode_errors(path: Path) -> Iterator[None]:
    """Turn what opening/decoding raises into one :class:`ImageError` line naming ``path``."""
    try:
        yield
    except ImageError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ImageError(f"{path}: {exc}") from None  # e.g. "32-bit float images are not supported"
    except DiffIRError:
        raise
    except OSError as exc:
        if exc.errno is not None:  # the operating system's (permission, I/O ...), not Pillow's "truncated"
            raise ImageError(describe_os_error(exc, path)) from None
        raise _damaged(path, exc) from None
    except (SyntaxError, ValueError, EOFError) as exc:  # Pillow's ways of saying "broken file"
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: BaseException) -> ImageError:
    return ImageError(f"{path}: cannot decode image ({_short(exc)}); the file is damaged or incomplete, "
                      "re-export or re-copy it")


def _frame_count(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - a broken later frame must not make the first one unreadable
        return 1


@contextmanager
def _open(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{path}: is a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes); re-export or re-copy it")
    with _pil_open(path) as im:
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise ImageError(f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} pixels "
                             "(raise it with --max-pixels N, none = no limit; Python: max_pixels=N, None = no limit)")
        yield im


def _pil_open(path: Path) -> Image.Image:
    try:
        # Pillow's own bomb check is a process-wide global; we check the header size ourselves instead.
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or a format Pillow cannot read)") from None


def _verify_png(path: Path) -> None:
    """Check every chunk's CRC: Pillow decodes the image data without it, so a flipped byte in a PNG would
    otherwise come back as a silently wrong picture instead of an error (the checks before the image data
    happen on opening, the rest here)."""
    with _pil_open(path) as im:
        im.verify()


def _is_16bit_colour(im: Image.Image) -> bool:
    if im.mode not in ("RGB", "RGBA", "LA") or not im.tile:
        return False
    args = im.tile[0].args
    rawmode = args[0] if isinstance(args, tuple) else args
    return isinstance(rawmode, str) and ";16" in rawmode


def _read_with_cv2(path: Path) -> np.ndarray:
    cv2 = _cv2()
    # np.fromfile + imdecode copes with non-ASCII paths on every OS (cv2.imread does not on Windows).
    data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageError(f"{path}: cannot decode 16-bit image; the file is damaged or incomplete")
    if data.ndim == 2:
        return data[..., None]
    if data.shape[2] == 3:
        return data[..., ::-1].copy()
    return data[..., [2, 1, 0, 3]].copy()


def pil_to_array(im: Image.Image) -> np.ndarray:
    """(H, W, C) uint8/uint16 array of a PIL image; palette, CMYK, YCbCr ... become RGB(A), bilevel becomes L."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im, dtype=np.uint16)[..., None]
    if mode == "I":  # 16-bit gray decoded as 32-bit ints by some plugins
        arr = np.asarray(im)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError("32-bit integer images are not supported")
        return arr.astype(np.uint16)[..., None]
    if mode == "F":
        raise ImageError("32-bit float images are not supported; save as 8- or 16-bit")
    if mode == "1":
        im = im.convert("L")
    elif mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")  # CMYK, YCbCr, LAB, RGBX, La, RGBa ...
    arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        return 1
    return value if value in range(1, 9) else 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Make an (H, W, C) array upright according to the EXIF orientation tag (same result as Pillow)."""
    ops = {
        1: lambda x: x,
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a))


# ------------------------------------------------------------------------------------------------ writing
def output_format(path: str | os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ImageError(f"{path}: unknown output extension {ext!r}; use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[ext]


def write_image(path: str | os.PathLike, pixels: np.ndarray, *, quality: int = 95,
                icc_profile: bytes | None = None) -> Path:
    """Write (H, W, C) or (H, W) uint8/uint16 pixels atomically; the format comes from the extension.

    Formats that cannot hold alpha (JPEG, BMP) drop it with a warning; 8-bit-only formats round 16-bit data.
    """
    path = Path(path)
    fmt = output_format(path)
    pixels = _prepare_for_format(np.asarray(pixels), fmt, path)
    try:
        with atomic_path(path) as tmp:  # hidden temporary name, renamed when complete, removed on error
            if pixels.dtype == np.uint16 and pixels.shape[2] > 1:
                _write_with_cv2(tmp, pixels)
            else:
                _write_with_pil(tmp, pixels, fmt, quality, icc_profile)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({_short(exc)})") from None
    return path


def _prepare_for_format(pixels: np.ndarray, fmt: str, path: Path) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: cannot write an array of shape {pixels.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: write_image needs uint8 or uint16 pixels, got {pixels.dtype}")
    if pixels.shape[2] in (2, 4) and fmt not in _ALPHA_FORMATS:
        warnings.warn(f"{path.name}: {fmt} has no alpha channel; alpha dropped (use .png to keep it)",
                      stacklevel=3)
        pixels = pixels[..., :-1]
    if pixels.dtype == np.uint16 and fmt not in _DEEP_FORMATS:
        pixels = to_8bit(pixels)
    if fmt == "WEBP" and pixels.shape[2] in (1, 2):  # WebP has no gray mode
        gray, alpha = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, alpha], axis=2)
    return pixels


def to_8bit(pixels: np.ndarray) -> np.ndarray:
    """uint16 → uint8 with rounding (65535 ↦ 255)."""
    return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _write_with_pil(tmp: Path, pixels: np.ndarray, fmt: str, quality: int, icc: bytes | None) -> None:
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:  # gray only (colour 16-bit goes through OpenCV)
        im = Image.fromarray(np.ascontiguousarray(pixels[..., 0]), mode=None)
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        data = pixels[..., 0] if channels == 1 else pixels
        im = Image.fromarray(np.ascontiguousarray(data), mode=None)
        if im.mode != mode:
            im = im.convert(mode)
    kwargs: dict = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if icc and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        kwargs["icc_profile"] = icc
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    im.save(tmp, format=fmt, **kwargs)


def _write_with_cv2(tmp: Path, pixels: np.ndarray) -> None:
    cv2 = _cv2()
    channels = pixels.shape[2]
    if channels == 2:  # OpenCV has no gray+alpha: store as RGBA
        gray, alpha = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, alpha], axis=2)
    bgr = pixels[..., [2, 1, 0]] if pixels.shape[2] == 3 else pixels[..., [2, 1, 0, 3]]
    ok, encoded = cv2.imencode(tmp.suffix, np.ascontiguousarray(bgr))
    if not ok:
        raise ImageError(f"{tmp}: OpenCV could not encode a 16-bit image")
    encoded.tofile(tmp)


# ------------------------------------------------------------------------------------------------ helpers
def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImageError(_CV2_HINT) from None
    return cv2


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

