"""Training / validation data wiring on top of :mod:`diffir.data`, made resumable bit for bit.

Determinism without relying on DataLoader worker state: every sample is addressed by its position ``n`` in
one global stream (``n`` counts samples over all processes and iterations).  The stream maps ``n`` to a
dataset index through a seeded permutation per epoch, and to a per-sample seed that re-seeds torch /
random / NumPy right before the dataset draws its crop, flips and masks.  Resuming at iteration ``i``
simply restarts the stream at ``i``: the data are then identical to an uninterrupted run, whatever the
number of workers.  Processes take interleaved slices of the stream (the role of ``DistributedSampler``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from diffir.errors import ConfigError
from diffir.train.config import DatasetSection

_MIX = 0x9E3779B97F4A7C15


def sample_seed(base: int, n: int) -> int:
    """A well-spread 63-bit seed for stream position ``n`` (splitmix64 finaliser)."""
    z = (base * 1_000_003 + n * _MIX + 0x632BE59BD9B4E019) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


class SeededItems(Dataset):
    """``ds[(index, seed)]``: the item drawn with every global RNG seeded by ``seed``; the caller's RNG states
    are restored afterwards (matters when loading in the main process)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite batches of ``(index, seed)`` keys for one process, starting at batch number ``start``.

    Batch ``b`` of rank ``r`` holds stream positions ``((b·world) + r)·B + j``, j < B.
    """

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:
        if length == 0:
            raise ConfigError("the training dataset is empty")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _index(self, n: int) -> int:
        epoch, pos = divmod(n, self.length)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(sample_seed(self.seed, -1 - epoch))
            self._perm, self._perm_epoch = torch.randperm(self.length, generator=g), epoch
        return int(self._perm[pos])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b = self.start
        while True:
            first = ((b * self.world_size) + self.rank) * self.batch_size
            yield [(self._index(n), sample_seed(self.seed, n)) for n in range(first, first + self.batch_size)]
            b += 1

    def __len__(self) -> int:  # infinite; DataLoader only needs this for len(loader)
        return 2**62


def build_dataset(section: DatasetSection, scale: int, task: str, train: bool) -> Dataset:
    """The :mod:`diffir.data` dataset a config section describes."""
    from diffir.data.files import ImageFolderError

    try:
        return _build_dataset(section, scale, task, train)
    except ImageFolderError as exc:  # name the config key / environment variable the folder came from
        for field in ("gt_dir", "lq_dir"):
            value = getattr(section, field)
            if value is not None and Path(value).expanduser() == exc.folder:
                raise ConfigError(f"{exc.problem} ({exc.hint}; {section.path_hint(field)})") from None
        raise


def _build_dataset(section: DatasetSection, scale: int, task: str, train: bool) -> Dataset:
    from diffir import data as D

    patch = section.patch_size if train else section.patch_size
    augment: bool | str = section.augment if train else False
    if section.kind == "paired":
        ds: Dataset = D.PairedImageDataset(section.lq_dir, section.gt_dir, scale=scale, patch_size=patch,
                                           augment=augment, filename_tmpl=section.filename_tmpl)
    elif section.kind == "folder":
        if section.degradation is None:
            raise ConfigError("data kind 'folder' needs a degradation (e.g. name: bicubic_x4)")
        ds = D.ImageFolderDataset(section.gt_dir, patch, augment=augment, repeat=section.repeat,
                                  skip=section.skip_images)
    elif section.kind == "diffbir":
        ds = StreamSeededDiffBIR(section.gt_dir, patch, section.crop_type)
    else:
        if task != "inpaint":
            raise ConfigError(f"data kind 'inpaint' needs an inpainting model, got task {task!r}")
        masks = mask_generator(section.mask) if section.mask else None
        ds = D.InpaintDataset(section.gt_dir, patch, mask_generator=masks,
                              augment="hflip" if augment is True else augment, repeat=section.repeat,
                              skip=section.skip_images)
    if section.max_images is not None:
        ds = torch.utils.data.Subset(ds, range(min(section.max_images, len(ds))))  # type: ignore[arg-type]
    if len(ds) == 0:  # type: ignore[arg-type]
        left = f" after skip_images {section.skip_images}" if section.skip_images else ""
        raise ConfigError(f"no images found in {section.gt_dir}{left}")
    return ds


class StreamSeededDiffBIR(Dataset):
    """DiffBIR's training pairs (the official ``CodeformerDataset``: crop + exact first-order degradation, per item
    in NumPy, so it runs in the loader's workers) in the engine's convention: ``gt`` and ``lq`` in [0, 1].

    Every draw of an item comes from the stream seed :class:`SeededItems` set (``torch.initial_seed()``), not from
    the item index: each epoch gets fresh crops and degradations, and a resumed run the same ones."""

    def __init__(self, source: str, out_size: int | None, crop_type: str) -> None:
        from diffir.data.diffbir_dataset import DiffBIRDataset

        self.pairs = DiffBIRDataset(source, out_size, crop_type)
        self.pairs.generator = _stream_generator  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.pairs[index]
        return {"gt": (item["gt"] + 1) / 2, "lq": item["lq"], "prompt": item["prompt"]}


def _stream_generator(index: int) -> np.random.Generator:
    # a module-level function, so the dataset still pickles for spawned loader workers
    return np.random.default_rng([torch.initial_seed(), index])


def mask_generator(options: dict[str, Any]):
    """A LamaMaskGenerator from config: ``{preset: thick_256}`` or field overrides with nested ``irregular`` /
    ``box`` sections (``{irregular: {max_width: 25}, box: {max_size: 40}, max_hole_fraction: 0.5}``)."""
    from dataclasses import replace

    from diffir.data.masks import BoxMaskSpec, IrregularMaskSpec, LamaMaskGenerator

    opts = dict(options)
    try:
        base = LamaMaskGenerator.preset(opts.pop("preset")) if "preset" in opts else LamaMaskGenerator()
        if "irregular" in opts:
            opts["irregular"] = replace(base.irregular, **opts["irregular"]) if base.irregular else (
                IrregularMaskSpec(**opts["irregular"]))
        if "box" in opts:
            opts["box"] = replace(base.box, **opts["box"]) if base.box else BoxMaskSpec(**opts["box"])
        return replace(base, **opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data mask options: {exc}") from None


def train_loader(dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int, start_batch: int,
                 num_workers: int) -> Iterator[dict[str, Any]]:
    sampler = StreamBatchSampler(len(dataset), batch_size, seed, rank, world_size, start_batch)  # type: ignore[arg-type]
    loader = DataLoader(SeededItems(dataset), batch_sampler=sampler, num_workers=num_workers,
                        pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)
    return iter(loader)


def val_items(dataset: Dataset, seed: int) -> Iterator[dict[str, Any]]:
    """Validation items one by one (batch 1, fixed seeds so inpainting masks never change)."""
    items = SeededItems(dataset)
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = items[(i, sample_seed(seed, i))]
        yield {k: (v.unsqueeze(0) if torch.is_tensor(v) else v) for k, v in item.items()}
