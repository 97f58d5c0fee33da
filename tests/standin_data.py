"""A stand-in for ``<shared>/data`` made of generated images, for running the tests without the shared folder.

The reference data pack (``../shared/data``) holds real image sets under a research-only licence, so it is not in
the repository.  Most tests use it only as *some* images: a training set whose loss must go down, an input to
tile, a folder to pair.  For those, :func:`build` writes a tree with the same layout and the file names (and, where
a test relies on them, the sizes) that the tests use, filled with deterministic procedural images: 1/f noise
(the power spectrum of natural photographs) plus hard-edged shapes, so they have edges, texture and smooth areas.
Nothing is copied from the shared folder.

Tests that compare against reference values of the real images (MATLAB bicubic files, published PSNR tables, NIQE
of one photo, official parity vectors) do not use this tree; they skip without the shared folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Set5 file names and (width, height) of the HR images, as in the real set.
SET5 = {"baby": (512, 512), "bird": (288, 288), "butterfly": (256, 256), "head": (280, 280), "woman": (228, 344)}
DEBLUR_PAIRS = ("DeblurGAN_test1", "DeblurGAN_yolo", "DeepDeblur_Flower1", "DeepDeblur_Istanbul1")


def natural_image(height: int, width: int, seed: int, downscaled: int = 1) -> np.ndarray:
    """A deterministic (height, width, 3) uint8 image with natural-image statistics.

    ``downscaled=s``: made at ``s`` times the size and reduced (antialiased bicubic), as LR test images are: the
    detail of ``s``×``s`` pixels in each one.
    """
    if downscaled > 1:
        big = Image.fromarray(natural_image(height * downscaled, width * downscaled, seed))
        return np.asarray(big.resize((width, height), Image.Resampling.BICUBIC)).copy()
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0

    def field(exponent: float) -> np.ndarray:  # Gaussian noise with a 1/f^exponent amplitude spectrum, std 1
        spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius**exponent
        spectrum[0, 0] = 0
        f = np.fft.irfft2(spectrum, s=(height, width))
        return f / (f.std() + 1e-12)

    # Detail is mostly in the luminance, colour varies slowly (as in photographs, and as JPEG's chroma
    # subsampling assumes): a 1/f luminance field, smooth chroma fields.
    luma, chroma = field(1.1), np.stack([field(2.0), field(2.0)], axis=-1)
    img = rng.uniform(90, 160, size=3) + 30 * luma[..., None] + chroma @ (rng.normal(size=(2, 3)) * 20)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(max(3, height * width // 10000)):  # hard edges: rectangles, discs and strokes
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(4, max(5, width // 3)))
        y1 = y0 + int(rng.integers(4, max(5, height // 3)))
        colour = tuple(int(c) for c in np.clip(rng.uniform(20, 235) + rng.normal(0, 20, size=3), 0, 255))  # muted
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 5)))
    out = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.8))).astype(np.float64)  # a lens: soft edges
    out += rng.normal(0, 1.5, out.shape[:2])[..., None]  # faint grey noise: no perfectly flat areas
    return np.clip(out, 0, 255).round().astype(np.uint8)


def motion_blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` convolved with ``kernel`` (symmetric padding), uint8."""
    kh, kw = kernel.shape
    pad = np.pad(img.astype(np.float64), ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0)),
                 mode="symmetric")
    out = np.zeros(img.shape, np.float64)
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        out += kernel[dy, dx] * pad[dy : dy + img.shape[0], dx : dx + img.shape[1]]
    return np.clip(out, 0, 255).round().astype(np.uint8)


def stroke_kernel(size: int, seed: int) -> np.ndarray:
    """A motion-blur-like kernel: a random thin polyline on a ``size``×``size`` canvas, summing to 1."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (size, size), 0)
    c = size / 2
    points = [(c, c)]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(3, 7))):
        angle += rng.normal(0, 0.8)
        step = rng.uniform(2, size / 6)
        x, y = points[-1]
        points.append((float(np.clip(x + step * np.cos(angle), 1, size - 2)),
                       float(np.clip(y + step * np.sin(angle), 1, size - 2))))
    ImageDraw.Draw(canvas).line(points, fill=255, width=1)
    k = np.asarray(canvas).astype(np.float64)
    return k / k.sum()


def hole_mask(size: int, seed: int) -> np.ndarray:
    """An (size, size) uint8 inpainting mask, 255 = hole: thick strokes and a box, covering a fair part."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(4):
        points = [tuple(int(v) for v in rng.integers(0, size, size=2)) for _ in range(3)]
        draw.line(points, fill=255, width=int(rng.integers(size // 20, size // 8)))
    x0, y0 = (int(v) for v in rng.integers(0, size // 2, size=2))
    draw.rectangle((x0, y0, x0 + size // 5, y0 + size // 6), fill=255)
    return np.asarray(canvas).copy()


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _set5(root: Path) -> None:
    from diffir.data.imresize import imresize

    for i, (name, (w, h)) in enumerate(SET5.items()):  # HR + LR_bicubic/X{2,3,4} of the crop to a multiple of s
        hr = natural_image(h, w, 100 + i)
        _save(hr, root / "HR" / f"{name}.png")
        for s in (2, 3, 4):
            _save(imresize(hr[: h // s * s, : w // s * s], 1 / s), root / "LR_bicubic" / f"X{s}" / f"{name}x{s}.png")


def _t91(root: Path) -> None:
    for i in range(1, 92):  # 91 files t1..t91 of 100-200 px; t20 is 78x78 as in the real set
        h, w = (78, 78) if i == 20 else (100 + (i * 37) % 101, 100 + (i * 53) % 101)
        _save(natural_image(h, w, 200 + i), root / f"t{i}.png")


def _bsd200(root: Path) -> None:
    for i in range(16):  # 481x321, landscape and portrait
        h, w = (321, 481) if i % 2 == 0 else (481, 321)
        _save(natural_image(h, w, 300 + i), root / f"bsd{i:03d}.png")


def _realsr(root: Path) -> None:
    for i in range(1, 4):
        _save(natural_image(128, 128, 400 + i, downscaled=4), root / "LR" / f"Canon_{i:03d}_LR4.png")


def _celeba(root: Path) -> None:
    for i in range(8):
        _save(natural_image(256, 256, 500 + i), root / f"{i:06d}.png")


def _inpaint_fixtures(root: Path) -> None:
    for i in range(1, 5):
        _save(natural_image(256, 256, 600 + i), root / "EC_celeba" / "images" / f"celeba_{i:02d}.png")
        _save(hole_mask(256, 600 + i), root / "EC_celeba" / "masks" / f"celeba_{i:02d}.png")


def _small_kernels() -> list[np.ndarray]:
    return [stroke_kernel(25, 700 + i) for i in range(12)]


def _kernels(root: Path) -> None:
    for i, size in ((1, 67), (2, 70)):  # grey PNG kernels, like k_large_*.png
        k = stroke_kernel(size, 720 + i)
        _save((k / k.max() * 255).round().astype(np.uint8), root / f"k_large_{i}.png")
    small = _small_kernels()
    try:  # a MATLAB v5 cell array of 12 kernels, like kernels_12.mat (compressed, as MATLAB writes it)
        from scipy.io import savemat
    except ImportError:  # scipy is a test extra; without it the same kernels as PNGs
        for i, k in enumerate(small):
            _save((k / k.max() * 255).round().astype(np.uint8), root / f"k_small_{i:02d}.png")
        return
    cell = np.empty((1, 12), dtype=object)
    for i, k in enumerate(small):
        cell[0, i] = k
    savemat(root / "kernels_12.mat", {"kernels": cell}, do_compression=True)


def _real_pairs(root: Path) -> None:
    small = _small_kernels()
    for i, name in enumerate(DEBLUR_PAIRS):  # sharp and motion-blurred, larger than 300x276
        sharp = natural_image(320, 400, 800 + i)
        _save(sharp, root / "sharp" / f"{name}.png")
        _save(motion_blur(sharp, small[i]), root / "blur" / f"{name}.png")


#: The parts of the tree, each written on its own when first needed (same content whatever the order).
PARTS = {
    "sr/Set5": _set5,
    "train/T91": _t91,
    "train/BSD200": _bsd200,
    "realsr/RealSR": _realsr,
    "inpaint/celeba_hq_256": _celeba,
    "inpaint/fixtures": _inpaint_fixtures,
    "deblur/kernels": _kernels,
    "deblur/real_pairs": _real_pairs,
}


def build(root: Path, rel: str = "") -> Path:
    """Write the parts of the stand-in tree that ``root / rel`` needs (all of them for ``rel=""``); idempotent."""
    root = Path(root)
    for key, make in PARTS.items():
        if rel and not (rel == key or rel.startswith(key + "/") or key.startswith(rel + "/")):
            continue
        done = root / ".complete" / key.replace("/", "_")  # a marker outside the image folders
        if done.exists():
            continue
        make(root / key)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()
    return root / rel if rel else root
