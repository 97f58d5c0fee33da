"""Training datasets: paired LQ/GT folders, GT-only folders (degraded later, batch-wise) and inpainting.

Every item is a dict of float32 CHW tensors in [0, 1] (RGB) plus the source path as a string.  Random
choices (crop position, flips) come from torch's global RNG, which ``DataLoader`` seeds per worker from
its own generator, so a loader built with ``generator=torch.Generator().manual_seed(s)`` is reproducible
with any ``num_workers``.  Pass :func:`seed_worker` as ``worker_init_fn`` to also seed ``random`` and
NumPy inside workers for third-party code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from diffir.data.files import SkippingReader, list_images, read_image
from diffir.data.transforms import (
    dihedral,
    pad_to_min_size,
    paired_random_crop,
    random_crop,
    random_dihedral_ops,
)
from diffir.errors import DiffIRError


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoader: seed ``random`` and NumPy from the worker's torch seed.

    torch already gives each worker ``base_seed + worker_id``; without this NumPy would start every
    worker (and every epoch, with non-persistent workers) from the same state.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _relative_stem(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


class PairedImageDataset(Dataset):
    """Pre-made LQ/GT pairs (e.g. bicubic DF2K, GoPro blur/sharp).

    The LQ file of GT ``<dir>/<stem>.<ext>`` is ``<dir>/<filename_tmpl.format(stem)>.<any ext>`` in
    ``lq_dir`` (e.g. ``filename_tmpl="{}x4"`` pairs ``baby.png`` with ``babyx4.png``).

    Training (``patch_size`` given): aligned random crops — GT ``patch_size``, LQ ``patch_size // scale`` —
    reflect-padded when an image is smaller, then one of the 8 flip/rot90 combinations applied to both
    (``augment=True``; ``"hflip"`` for flips only; False for none).
    Evaluation (``patch_size=None``): whole images, GT cut to ``scale`` × the LQ size (top-left), which is
    how LR sets made from a non-multiple-of-scale HR image line up.
    """

    def __init__(
        self,
        lq_dir: str | Path,
        gt_dir: str | Path,
        scale: int = 1,
        patch_size: int | None = None,
        augment: bool | str = True,
        filename_tmpl: str = "{}",
    ):
        self.lq_root, self.gt_root = Path(lq_dir), Path(gt_dir)
        self.scale = int(scale)
        if patch_size is not None and patch_size % self.scale:
            raise DiffIRError(f"patch_size {patch_size} is not a multiple of scale {self.scale}")
        self.patch_size = patch_size
        self.augment = augment
        gt_files = list_images(self.gt_root)
        lq_by_stem = {_relative_stem(p, self.lq_root): p for p in list_images(self.lq_root)}
        self.pairs: list[tuple[Path, Path]] = []
        missing: list[str] = []
        for gt in gt_files:
            rel = Path(_relative_stem(gt, self.gt_root))
            key = (rel.parent / filename_tmpl.format(rel.name)).as_posix()
            if key in lq_by_stem:
                self.pairs.append((lq_by_stem[key], gt))
            else:
                missing.append(key)
        if missing:
            raise DiffIRError(
                f"{len(missing)} of {len(gt_files)} GT images have no LQ partner in {self.lq_root} "
                f"(first expected: {missing[0]}.*); check filename_tmpl={filename_tmpl!r}"
            )
        self._lq_reader = SkippingReader([p[0] for p in self.pairs])
        self._gt_reader = SkippingReader([p[1] for p in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        lq, _, used = self._lq_reader.read(index)
        gt, gt_path, _ = self._gt_reader.read(used)
        s = self.scale
        lh, lw = lq.shape[-2:]
        if gt.shape[-2] < lh * s or gt.shape[-1] < lw * s:
            raise DiffIRError(
                f"GT {gt_path} is {tuple(gt.shape[-2:])} but LQ is {(lh, lw)} at scale {s}: sizes do not match"
            )
        gt = gt[:, : lh * s, : lw * s]
        if self.patch_size is not None:
            lq_patch = self.patch_size // s
            lq = pad_to_min_size(lq, lq_patch, lq_patch)
            gt = pad_to_min_size(gt, lq.shape[-2] * s, lq.shape[-1] * s)
            lq, gt = paired_random_crop(lq, gt, self.patch_size, s)
            ops = random_dihedral_ops(self.augment)
            lq, gt = dihedral(lq, *ops), dihedral(gt, *ops)
        return {"lq": lq.contiguous(), "gt": gt.contiguous(), "path": str(gt_path)}


class ImageFolderDataset(Dataset):
    """GT-only images for on-the-fly degradation (Real-ESRGAN, DiffBIR, motion blur, ...).

    Each item is one random ``patch_size`` crop (reflect-padded first when ``pad_reflect`` and the image is
    smaller; otherwise too-small images are an error), augmented with ``augment`` (True: 8 flip/rot90
    combinations; ``"hflip"``: horizontal flips only, as the Real-ESRGAN recipe). ``repeat`` enlarges an
    epoch (BasicSR's ``dataset_enlarge_ratio``). ``patch_size=None`` returns whole images.  ``skip`` leaves out
    the first images (sorted by path): those held out for evaluation.
    """

    def __init__(
        self,
        gt_dir: str | Path,
        patch_size: int | None,
        augment: bool | str = True,
        pad_reflect: bool = True,
        repeat: int = 1,
        skip: int = 0,
    ):
        self.files = list_images(gt_dir)[skip:]
        self.patch_size = patch_size
        self.augment = augment
        self.pad_reflect = pad_reflect
        self.repeat = max(1, int(repeat))
        self._reader = SkippingReader(self.files)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, index: int) -> dict[str, Any]:
        gt, path, _ = self._reader.read(index % len(self.files))
        if self.patch_size is not None:
            p = self.patch_size
            if min(gt.shape[-2:]) < p:
                if not self.pad_reflect:
                    raise DiffIRError(f"{path} is {tuple(gt.shape[-2:])}, smaller than patch_size {p}")
                gt = pad_to_min_size(gt, p, p)
            gt = random_crop(gt, p)
        gt = dihedral(gt, *random_dihedral_ops(self.augment))
        return {"gt": gt.contiguous(), "path": str(path)}


class InpaintDataset(Dataset):
    """Images plus freshly generated hole masks (LaMa recipe).

    Returns ``gt`` (3, P, P), ``mask`` (1, P, P) with 1 = hole, and the network input
    ``lq = cat([gt * (1 - mask), mask])`` (4, P, P). Images are reflect-padded and randomly cropped to
    ``patch_size`` (CelebA-HQ 256 needs neither), with horizontal flips by default. The mask generator is
    any callable ``(height, width, generator) -> (1, H, W) tensor``; default :class:`LamaMaskGenerator`
    (the training mix of §5.4). The mask RNG is drawn from torch's RNG, hence seeded per worker.
    """

    def __init__(
        self,
        image_dir: str | Path,
        patch_size: int | None = 256,
        mask_generator: Callable[..., torch.Tensor] | None = None,
        augment: bool | str = "hflip",
        repeat: int = 1,
        skip: int = 0,
    ):
        from diffir.data.masks import LamaMaskGenerator

        self.images = ImageFolderDataset(image_dir, patch_size, augment=augment, repeat=repeat, skip=skip)
        self.mask_generator = mask_generator if mask_generator is not None else LamaMaskGenerator()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.images[index]
        gt = item["gt"]
        seed = int(torch.randint(2**62, (1,), device="cpu").item())
        mask = self.mask_generator(gt.shape[-2], gt.shape[-1], torch.Generator(device="cpu").manual_seed(seed))
        mask = mask.to(gt.dtype)
        lq = torch.cat([gt * (1 - mask), mask], dim=0)
        return {"gt": gt, "mask": mask, "lq": lq, "path": item["path"]}


def read_pair(lq_path: str | Path, gt_path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images of a pair (convenience for scripts and tests)."""
    return read_image(lq_path), read_image(gt_path)
