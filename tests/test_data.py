"""Datasets: pairing, aligned crops, augmentation, worker processes, error messages."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from conftest import require_shared, shared_data
from diffir.data import ImageFolderDataset, PairedImageDataset, build_degradation, read_image, seed_worker
from diffir.data.transforms import dihedral, paired_random_crop
from diffir.errors import DiffIRError


@pytest.fixture(scope="module")
def set5():
    """Set5 (HR + LR_bicubic), or its stand-in of generated images without the shared folder."""
    return shared_data("sr", "Set5")


def test_bicubic_degradation_matches_matlab_lr_sets():
    set5 = require_shared("data", "sr", "Set5")  # the MATLAB-made LR files are the reference
    for scale in (2, 3, 4):
        deg = build_degradation(f"bicubic_x{scale}")
        for name in ("baby", "woman"):
            gt = read_image(set5 / "HR" / f"{name}.png")[None]
            ref = read_image(set5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")[None]
            out = deg(gt)
            assert out["lq"].shape == ref.shape
            assert out["gt"].shape[-2:] == (ref.shape[-2] * scale, ref.shape[-1] * scale)
            assert (out["lq"] - ref).abs().max().item() * 255 <= 1.0 + 1e-4


def test_paired_dataset_crops_are_aligned(set5):
    # Pair HR with its own MATLAB bicubic LR: an aligned crop must downsample to (almost) the LQ crop.
    ds = PairedImageDataset(set5 / "LR_bicubic" / "X4", set5 / "HR", scale=4, patch_size=64, filename_tmpl="{}x4")
    assert len(ds) == 5
    deg = build_degradation("bicubic_x4")
    torch.manual_seed(0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["lq"].shape == (3, 16, 16) and item["gt"].shape == (3, 64, 64)
        assert item["lq"].dtype == torch.float32 and item["lq"].min() >= 0 and item["gt"].max() <= 1
        # away from the crop border the bicubic footprint is inside the crop
        err = (deg(item["gt"][None])["lq"][0] - item["lq"])[:, 3:-3, 3:-3].abs().mean().item()
        assert err < 2 / 255, err


def test_paired_dataset_eval_mode_whole_images(set5):
    ds = PairedImageDataset(set5 / "LR_bicubic" / "X3", set5 / "HR", scale=3, patch_size=None, filename_tmpl="{}x3")
    item = ds[0]  # baby: 510x510 GT cut from 512
    assert item["lq"].shape == (3, 170, 170) and item["gt"].shape == (3, 510, 510)


def test_missing_partner_and_empty_folder_errors(set5, tmp_path):
    with pytest.raises(DiffIRError, match="no LQ partner"):
        PairedImageDataset(set5 / "LR_bicubic" / "X4", set5 / "HR", scale=4, patch_size=64)
    with pytest.raises(DiffIRError, match="no images"):
        ImageFolderDataset(tmp_path, 64)
    with pytest.raises(DiffIRError, match="not found"):
        ImageFolderDataset(tmp_path / "nope", 64)


def test_missing_folder_error_from_python_names_no_config(tmp_path, monkeypatch):
    """Used from Python there is no config: the message says where a relative path was looked for instead."""
    from diffir.data import ImageFolderError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageFolderError) as err:
        ImageFolderDataset("DF2K_sub/", 64)
    msg = str(err.value)
    assert msg == f"image folder not found: DF2K_sub (relative to the working directory {tmp_path})"
    assert err.value.folder.name == "DF2K_sub" and isinstance(err.value, DiffIRError)
    with pytest.raises(ImageFolderError) as err:
        ImageFolderDataset(tmp_path, 64)
    assert "config" not in str(err.value) and "looked recursively for" in str(err.value)


def test_docs_data_snippet_runs_as_written(monkeypatch):
    """The first code block of docs/data.md runs unchanged on a CPU (DIFFIR_DATA = the reference data)."""
    from conftest import REPO

    monkeypatch.setenv("DIFFIR_DATA", str(shared_data()))
    text = (REPO / "docs" / "data.md").read_text()
    start = text.index("```python\n") + len("```python\n")
    code = text[start : text.index("```", start)]
    scope: dict = {}
    exec(compile(code, "docs/data.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["step"] == 1
    assert scope["lq"].shape == (8, 3, 64, 64) and scope["gt"].shape == (8, 3, 256, 256)
    assert scope["lq"].device.type == "cpu" or torch.cuda.is_available()


def test_unreadable_files_are_skipped_with_warning(set5, tmp_path):
    import shutil

    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    shutil.copy(set5 / "HR" / "bird.png", sub / "bird.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = ImageFolderDataset(tmp_path, 32)
    assert len(ds) == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(2)]
    assert all(it["path"].endswith("bird.png") for it in items)
    assert any("unreadable" in str(w.message) for w in caught)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    scale=st.sampled_from([1, 2, 3, 4]),
    seed=st.integers(0, 2**31),
    ops=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_crop_and_augment_keep_pairs_aligned(h, w, scale, seed, ops):
    # GT whose every pixel encodes its LQ coordinates; LQ = the encoding at LQ resolution.
    ys, xs = torch.meshgrid(torch.arange(h * scale), torch.arange(w * scale), indexing="ij")
    gt = torch.stack([ys // scale, xs // scale, torch.zeros_like(ys)]).float()
    lq = gt[:, ::scale, ::scale]
    patch = scale * min(h, w, 8)
    g = torch.Generator().manual_seed(seed)
    lq_c, gt_c = paired_random_crop(lq, gt, patch, scale, generator=g)
    lq_c, gt_c = dihedral(lq_c, *ops), dihedral(gt_c, *ops)
    assert lq_c.shape[-2:] == (patch // scale, patch // scale) and gt_c.shape[-2:] == (patch, patch)
    assert torch.equal(gt_c[:, ::scale, ::scale], lq_c)


def test_image_folder_small_images_padded_and_worker_loader():
    t91 = shared_data("train", "T91")
    ds = ImageFolderDataset(t91, patch_size=96, augment=True, repeat=2)
    assert len(ds) == 2 * 91
    small = next(i for i, p in enumerate(ds.files) if p.name == "t20.png")  # 78x78
    assert ds[small]["gt"].shape == (3, 96, 96)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = DataLoader(
            ds, batch_size=4, shuffle=True, num_workers=workers, worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(7),
        )
        out = []
        for i, b in enumerate(loader):
            out.append(b["gt"])
            if i == 2:
                break
        return out

    a, b = batches(2), batches(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (4, 3, 96, 96)
