"""Build the sample images in ``samples/`` from scikit-image's bundled photos, deterministically.

Sources (all public domain or CC0, see samples/README.md): ``chelsea.png``, ``coffee.png``, ``rocket.jpg`` and
``astronaut.png`` from the ``data`` folder of the installed scikit-image (``pip install -e ".[test]"``
installs it).  Every degradation uses diffir's own code with fixed seeds, so running this again gives the
same bytes (same library versions assumed: Pillow's PNG/JPEG encoders, torch's random generator).

    python samples/make_samples.py              # rewrite the files next to this script
    python samples/make_samples.py --out DIR    # write them under DIR instead (same layout)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diffir.data.degradations.motion import MotionBlurDegradation
from diffir.data.imresize import imresize
from diffir.data.jpeg import jpeg_roundtrip
from diffir.data.masks import IrregularMaskSpec, LamaMaskGenerator
from diffir.data.noise import gaussian_noise
from diffir.io.images import read_image, write_image

HERE = Path(__file__).resolve().parent


def skimage_data() -> Path:
    """The ``data`` folder of the installed scikit-image (only its bundled files are used, nothing is fetched)."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit('scikit-image is needed to rebuild the samples: pip install -e ".[test]"')
    return Path(spec.origin).parent / "data"


def load(name: str) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a scikit-image sample photo."""
    return read_image(skimage_data() / name).pixels[..., :3]


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)[None] / 255


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def sr_x4(out: Path) -> None:
    """Bicubic x4: chelsea cut to 448x300, MATLAB ``imresize(hr, 1/4, 'bicubic')`` (uint8) -> 112x75."""
    hr = load("chelsea.png")[:300, :448]
    write_image(out / "sr_x4" / "chelsea.png", imresize(hr, 1 / 4))


def realsr_x4(out: Path) -> None:
    """Photo-like x4: coffee 600x400 -> MATLAB bicubic 1/4 (150x100), Gaussian noise sigma 4/255, JPEG q70."""
    x = to_tensor(imresize(load("coffee.png"), 1 / 4))
    gen = torch.Generator().manual_seed(70)
    x = gaussian_noise(x, torch.tensor([4 / 255]), torch.tensor([False]), gen).clamp(0, 1)
    x = jpeg_roundtrip(x, [70])  # Pillow encode at quality 70 + decode; stored losslessly as PNG
    write_image(out / "realsr_x4" / "coffee.png", to_uint8(x))


def deblur(out: Path) -> None:
    """Motion blur: rocket cut to 256x256, one random camera-shake trajectory kernel (31x31 canvas, path length
    24-32 px, seed 5: a curved shake about 11x11 px), Gaussian noise sigma 1/255, 8-bit rounding.  The sharp
    crop goes to reference/."""
    sharp = load("rocket.jpg")[171:427, 192:448]
    deg = MotionBlurDegradation(trajectory_prob=1.0, trajectory_size=31, length_range=(24.0, 32.0),
                                noise_prob=1.0, noise_range=(1.0, 1.0))
    res = deg(to_tensor(sharp), generator=torch.Generator().manual_seed(5))
    write_image(out / "deblur" / "rocket.png", to_uint8(res["lq"]))
    write_image(out / "deblur" / "reference" / "rocket.png", sharp)


#: A few thick LaMa-style brush strokes: 2-4 stroke groups, brush 8-27 px, segments 10-79 px, hole <= 25 %.
STROKES = LamaMaskGenerator(
    irregular=IrregularMaskSpec(max_angle=4, max_len=70, max_width=20, min_times=2, max_times=3),
    box_proba=0.0, max_hole_fraction=0.25,
)
MASK_SEED = 17  # picked by eye: a stroke across the eyes, one from the left edge to the chin, one down the right edge


def inpaint(out: Path) -> None:
    """Inpainting: astronaut 288x288 around the face -> MATLAB bicubic to 256x256; a stroke mask (white = hole)."""
    face = imresize(load("astronaut.png")[0:288, 80:368], size=(256, 256))
    hole = STROKES(256, 256, generator=torch.Generator().manual_seed(MASK_SEED))[0].numpy()
    write_image(out / "inpaint" / "astronaut.png", face)
    write_image(out / "inpaint" / "astronaut_mask.png", (hole * 255).astype(np.uint8))


MAKERS = (sr_x4, realsr_x4, deblur, inpaint)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: the samples/ folder)")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float summation order on every machine
    try:
        for make in MAKERS:
            make(args.out)
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
