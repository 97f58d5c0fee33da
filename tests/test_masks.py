"""LaMa mask generator: exact parameter ranges (incl. the 1–6 group off-by-one), margins, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data
from diffir.data import InpaintDataset, LamaMaskGenerator, build_degradation
from diffir.data.masks import BoxMaskSpec, IrregularMaskSpec


def test_training_irregular_ranges_and_off_by_one():
    spec = IrregularMaskSpec()  # max_angle 4, max_len 200, max_width 100, times 1..5 in the config
    counts, seg_counts, widths, angles = set(), set(), set(), set()
    for seed in range(400):
        groups = spec.strokes(256, 256, np.random.default_rng(seed))
        counts.add(len(groups))
        for gi, group in enumerate(groups):
            seg_counts.add(len(group))
            for x0, y0, x1, y1, width in group:
                widths.add(width)
                assert 0 <= x1 <= 256 and 0 <= y1 <= 256
                if np.hypot(x1 - x0, y1 - y0) > 60 and 0 < x1 < 256 and 0 < y1 < 256:
                    ang = np.arctan2(x1 - x0, y1 - y0) % (2 * np.pi)  # sin along x, cos along y
                    angles.add((gi % 2, float(ang)))
    assert counts == set(range(1, 7))  # config max_times 5, but 6 groups happen (LaMa's off-by-one)
    assert seg_counts == set(range(1, 6))
    assert min(widths) >= 5 and max(widths) <= 104
    # odd groups keep angles 0.01 + {0..3}; even groups mirror them to 2π − angle
    base = np.array([0.01, 1.01, 2.01, 3.01])
    for group_parity, ang in angles:
        allowed = base if group_parity == 1 else 2 * np.pi - base
        assert np.abs(allowed - ang).min() < 0.04, (group_parity, ang)  # endpoints are truncated to int


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(50, 300), w=st.integers(50, 300))
def test_boxes_inside_margins(seed, h, w):
    spec = BoxMaskSpec()  # margin 10, sides 30..150, 1..4 boxes
    boxes = spec.boxes(h, w, np.random.default_rng(seed))
    assert 1 <= len(boxes) <= 4
    for x, y, bw, bh in boxes:
        assert 30 <= bw <= min(150, w - 20) and 30 <= bh <= min(150, h - 20)
        assert x >= 10 and y >= 10 and x + bw <= w - 10 and y + bh <= h - 10


def test_box_sides_reach_both_ends():
    sides = set()
    for seed in range(300):
        for _, _, bw, bh in BoxMaskSpec().boxes(256, 256, np.random.default_rng(seed)):
            sides |= {bw, bh}
    assert min(sides) == 30 and max(sides) == 150


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**62), size=st.sampled_from([(256, 256), (128, 192)]))
def test_mask_tensor_binary_shape_and_deterministic(seed, size):
    gen = LamaMaskGenerator()
    m = gen(*size, torch.Generator().manual_seed(seed))
    assert m.shape == (1, *size) and m.dtype == torch.float32
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    assert 0 < m.mean() <= 1  # training masks have no area cap; small images can be fully covered
    assert torch.equal(m, gen(*size, torch.Generator().manual_seed(seed)))


def test_hole_fraction_statistics():
    gen = LamaMaskGenerator()
    kinds, fractions = [], []
    rs = np.random.default_rng(0)
    for _ in range(200):
        mask, kind, _ = gen.sample(256, 256, rs)
        kinds.append(kind)
        fractions.append(mask.mean())
    assert 0.4 < kinds.count("box") / len(kinds) < 0.6  # 50/50 mix
    assert 0.2 < float(np.mean(fractions)) < 0.5
    for name in ("thick", "thin", "medium", "thick_512", "thin_512"):
        preset = LamaMaskGenerator.preset(name)
        s = 512 if name.endswith("512") else 256
        fr = [preset(s, s, torch.Generator().manual_seed(i)).mean().item() for i in range(15)]
        assert max(fr) <= 0.5 and min(fr) > 0, name
    with pytest.raises(ValueError, match="unknown mask preset"):
        LamaMaskGenerator.preset("huge")


def test_lama_mask_degradation_and_inpaint_dataset():
    deg = build_degradation("lama_masks")
    gt = torch.rand(2, 3, 64, 64)
    out = deg(gt, torch.Generator().manual_seed(0))
    assert out["lq"].shape == (2, 4, 64, 64) and out["mask"].shape == (2, 1, 64, 64)
    assert torch.equal(out["lq"][:, :3], gt * (1 - out["mask"])) and torch.equal(out["lq"][:, 3:], out["mask"])

    ds = InpaintDataset(shared_data("inpaint", "celeba_hq_256"), patch_size=256)
    item = ds[0]
    assert item["gt"].shape == (3, 256, 256) and item["mask"].shape == (1, 256, 256)
    assert item["lq"].shape == (4, 256, 256)
    assert torch.equal(item["lq"][:3], item["gt"] * (1 - item["mask"]))
