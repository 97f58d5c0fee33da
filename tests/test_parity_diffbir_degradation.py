"""Parity of the exact DiffBIR first-order degradation with the official ``CodeformerDataset.__getitem__``
(parity README §3(f), §4.8): every ``deg.*`` stage from the pinned draws of each case."""

from __future__ import annotations

import numpy as np
import pytest

from diffbir_parity import case, case_names
from diffir.data.degradations.diffbir_exact import (
    STAGES,
    FirstOrderParams,
    FirstOrderRanges,
    blur_kernel,
    degrade_first_order,
    down_size,
    sample_first_order_params,
)

OWNED = ("deg.",)


def _pinned(c) -> FirstOrderParams:
    d = c.meta["degradation"]
    iso = d["kernel"] == "iso"
    noise = c.input("in.deg_noise").numpy()
    return FirstOrderParams(
        kernel=d["kernel"],
        sigma_x=float(d["sigma_x"]),
        sigma_y=float(d["sigma_x"] if iso else d["sigma_y"]),
        theta=0.0 if iso else float(d["theta"]),
        scale=float(d["scale"]),
        noise_sigma=float(d["noise_sigma"]),
        gray=noise.ndim == 2,
        noise=noise,
        jpeg_quality=float(d["jpeg_q"]),
    )


@pytest.mark.parametrize("name", case_names())
def test_degradation_stages_match_official(name: str) -> None:
    c = case(name)
    gt = c.input("in.deg_gt_u8").numpy()
    size = c.meta["shapes"]["deg_size"]
    assert gt.shape == (size, size, 3)
    out = degrade_first_order(gt, _pinned(c))
    assert tuple(out) == STAGES
    for stage in STAGES:
        c.check(f"deg.{stage}", out[stage])
    # JPEG works on 8-bit values: the decoded image must be the codec's exact output, not merely close
    assert np.array_equal(out["jpeg"], c.ref["deg.jpeg"].numpy()), "JPEG output not bit-exact"
    c.assert_group_checked("deg.")


@pytest.mark.parametrize("name", case_names())
def test_sizes_follow_official_truncation(name: str) -> None:
    c = case(name)
    d = c.meta["degradation"]
    size = c.meta["shapes"]["deg_size"]
    assert down_size(size, size, float(d["scale"])) == tuple(c.ref["deg.down"].shape[:2])
    info = c.meta["info"]["degradation"]
    assert info["jpeg_quality_int"] == int(d["jpeg_q"])


def test_sampler_order_ranges_and_reproducibility() -> None:
    ranges = FirstOrderRanges()
    kinds = set()
    for seed in range(40):
        p = sample_first_order_params(np.random.default_rng(seed), 48, 64, ranges)
        again = sample_first_order_params(np.random.default_rng(seed), 48, 64, ranges)
        assert p.kernel == again.kernel and np.array_equal(p.noise, again.noise)
        kinds.add(p.kernel)
        assert 0.1 <= p.sigma_x <= 12 and 0.1 <= p.sigma_y <= 12
        assert 1 <= p.scale <= 12 and 0 <= p.noise_sigma <= 15 and 30 <= p.jpeg_quality <= 100
        assert not p.gray  # gray_prob 0
        assert p.noise.shape == (*down_size(48, 64, p.scale), 3)
        if p.kernel == "iso":
            assert p.sigma_y == p.sigma_x and p.theta == 0.0
        else:
            assert -np.pi <= p.theta <= np.pi
    assert kinds == {"iso", "aniso"}


def test_sampler_draw_order() -> None:
    """The same stream replayed by hand: prompt drop, kind, σx (σy, θ), r, noise σ, gray test, noise, quality."""
    for seed in range(20):
        p = sample_first_order_params(np.random.default_rng(seed), 40, 40)
        g = np.random.default_rng(seed)
        assert p.drop_prompt == (g.uniform() < 0.5)
        assert p.kernel == ("iso" if g.uniform() < 0.5 else "aniso")
        assert p.sigma_x == g.uniform(0.1, 12)
        if p.kernel == "aniso":
            assert (p.sigma_y, p.theta) == (g.uniform(0.1, 12), g.uniform(-np.pi, np.pi))
        assert (p.scale, p.noise_sigma) == (g.uniform(1, 12), g.uniform(0, 15))
        g.uniform()  # the gray-noise test is drawn although gray_prob is 0
        assert np.array_equal(p.noise, g.standard_normal(p.noise.shape))
        assert p.jpeg_quality == g.uniform(30, 100)


def test_aniso_kernel_is_rotated_covariance() -> None:
    """Σ = R(θ)·diag(σx², σy²)·R(θ)ᵀ evaluated with an explicit inverse, normalised (twice) to sum 1."""
    sx, sy, th = 2.3, 7.1, 0.9
    p = FirstOrderParams("aniso", sx, sy, th, 2.0, 0.0, False, np.zeros((1, 1, 3)), 50.0)
    k = blur_kernel(p)
    ax = np.arange(-20, 21, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    xy = np.stack([xx, yy], -1)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    ref = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, inv, xy))
    ref /= ref.sum()
    assert k.shape == (41, 41) and abs(k.sum() - 1) < 1e-12
    assert np.abs(k - ref).max() < 1e-15
