"""On-the-fly degradations: kernels, noise, determinism, shapes, ranges, option overrides, device use."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_shared, shared_data
from diffir.data import (
    ImageFolderDataset,
    ProgressiveSchedule,
    TrainingPairPool,
    USMSharp,
    build_degradation,
    cut_batch,
)
from diffir.data.jpeg import jpeg_roundtrip
from diffir.data.kernels import KERNEL_TYPES, gaussian_family_kernels, sample_blur_kernels, sinc_kernels
from diffir.data.motion import center_on_canvas, load_kernels, random_trajectory_kernels
from diffir.data.noise import gaussian_noise, poisson_noise
from diffir.errors import ConfigError


@pytest.fixture(scope="module")
def patches() -> torch.Tensor:
    """Four real 96x96 training patches (BSD200; generated stand-ins without the shared folder), fixed crops."""
    torch.manual_seed(0)
    ds = ImageFolderDataset(shared_data("train", "BSD200"), patch_size=96, augment=False)
    return torch.stack([ds[i]["gt"] for i in range(4)])


def _support(k: torch.Tensor) -> int:
    rows = torch.nonzero(k.abs().sum(1) > 0)
    return int(rows.max() - rows.min() + 1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 6), sinc_prob=st.sampled_from([0.0, 0.1, 1.0]))
def test_blur_kernels_normalised_and_of_declared_size(seed, n, sinc_prob):
    k = sample_blur_kernels(n, torch.Generator().manual_seed(seed), sinc_prob=sinc_prob)
    assert k.shape == (n, 21, 21)
    assert torch.allclose(k.sum((1, 2)), torch.ones(n, dtype=k.dtype), atol=1e-9)
    for ki in k:
        size = _support(ki)  # can be below the drawn size when a narrow kernel underflows to exact zeros
        assert size % 2 == 1 and size <= 21
        assert torch.equal(ki, ki.flip(0, 1)) or torch.allclose(ki, ki.flip(0, 1), atol=1e-12)  # centred


@pytest.mark.parametrize("kind", range(len(KERNEL_TYPES)))
def test_each_kernel_family_has_the_requested_size(kind):
    d = torch.float64
    iso = kind % 2 == 0
    sy, theta = (3.0, 0.0) if iso else (2.0, 0.7)
    k = gaussian_family_kernels(
        torch.tensor([9]), torch.tensor([kind]), torch.tensor([3.0], dtype=d), torch.tensor([sy], dtype=d),
        torch.tensor([theta], dtype=d), torch.tensor([1.5], dtype=d), pad_to=21,
    )[0]
    assert _support(k) == 9 and abs(float(k.sum()) - 1) < 1e-12 and k.min() >= 0
    if iso:
        assert torch.allclose(k, k.T)
    s = sinc_kernels(torch.tensor([13]), torch.tensor([math.pi / 3]))[0]
    assert _support(s) == 13 and abs(float(s.sum()) - 1) < 1e-12


ALL = [
    ("bicubic_x4", {}, 4),
    ("realesrgan_x4", {}, 4),
    ("realesrgan_x2", {}, 2),
    ("realesrgan_x1", {}, 1),
    ("diffbir", {"scale": 1}, 1),
    ("diffbir", {"scale": 4}, 4),
    ("motion_blur", {"noise_prob": 0.5}, 1),
]


@pytest.mark.parametrize(("name", "opts", "scale"), ALL)
def test_shapes_ranges_and_determinism(patches, name, opts, scale):
    deg = build_degradation(name, **opts)
    a = deg(patches, torch.Generator().manual_seed(5))
    b = deg(patches, torch.Generator().manual_seed(5))
    assert a["lq"].shape == (4, 3, 96 // scale, 96 // scale)
    assert a["gt"].shape == patches.shape and a["lq"].dtype == torch.float32
    assert torch.equal(a["lq"], b["lq"])
    assert a["lq"].min() >= 0 and a["lq"].max() <= 1
    assert torch.equal(torch.round(a["lq"] * 255) / 255, a["lq"])  # 8-bit like a saved LQ image
    if name != "bicubic_x4":
        c = deg(patches, torch.Generator().manual_seed(6))
        assert not torch.equal(a["lq"], c["lq"])


@pytest.mark.parametrize(("name", "opts", "scale"), ALL + [("lama_masks", {}, 1)])
def test_runs_on_the_tensor_device(patches, name, opts, scale):
    # Any tensor created without an explicit device lands on "meta" and mixing it with the CPU input fails:
    # a CUDA-free proof that every internal tensor follows the input's device.
    deg = build_degradation(name, **opts)
    with torch.device("meta"):
        out = deg(patches[:2], torch.Generator().manual_seed(0))
    assert all(v.device.type == "cpu" for v in out.values())


def test_realesrgan_options_override_every_stage(patches):
    # Switch off blur, resizing randomness, noise, JPEG and the final sinc: LQ must be a plain downscale.
    clean = build_degradation(
        "realesrgan_x2", kernel_range=[7], blur_sigma=[0.2, 0.2], sinc_prob=0, kernel_list=["iso"], kernel_prob=[1],
        resize_prob=[0, 0, 1], gaussian_noise_prob=1, noise_range=[0, 0], gray_noise_prob=0, jpeg_range=[100, 100],
        second_blur_prob=0, resize_prob2=[0, 0, 1], gaussian_noise_prob2=1, noise_range2=[0, 0],
        jpeg_range2=[100, 100], final_sinc_prob=0, resize_modes=["area"],
    )
    out = clean(patches, torch.Generator().manual_seed(0))
    ref = torch.nn.functional.avg_pool2d(patches, 2)
    mse = torch.mean((out["lq"] - ref) ** 2).item()
    assert -10 * math.log10(mse) > 33
    dirty = build_degradation("realesrgan_x2")(patches, torch.Generator().manual_seed(0))["lq"]
    assert torch.mean((dirty - ref) ** 2).item() > mse


def test_realesrgan_whole_image_not_a_multiple_of_the_scale_lines_up(patches):
    """Validation on whole images (e.g. Set14's 250x361 ones): GT is cut to 4x the LQ size, top-left."""
    img = patches[:1, :, :63, :61]
    out = build_degradation("realesrgan_x4")(img, torch.Generator().manual_seed(0))
    assert out["lq"].shape[-2:] == (15, 15) and out["gt"].shape[-2:] == (60, 60)
    assert torch.equal(out["gt"], img[..., :60, :60])


def test_realesrgan_crop_usm_and_pool(patches):
    deg = build_degradation("realesrgan_x4", gt_size=64, gt_usm=True)
    out = deg(patches, torch.Generator().manual_seed(1))
    assert out["lq"].shape == (4, 3, 16, 16) and out["gt"].shape == out["gt_usm"].shape == (4, 3, 64, 64)
    sharp = USMSharp()(patches)
    assert sharp.min() >= 0 and sharp.max() <= 1
    grad = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean()  # noqa: E731
    assert grad(sharp) > grad(patches)

    pool = TrainingPairPool(pool_size=4)
    first = {"lq": torch.arange(2.0).view(2, 1), "gt": torch.arange(2.0).view(2, 1) * 10}
    assert pool(first) is first
    pool({"lq": torch.tensor([[2.0], [3.0]]), "gt": torch.tensor([[20.0], [30.0]])})
    state = pool.state_dict()
    third = {"lq": torch.tensor([[4.0], [5.0]]), "gt": torch.tensor([[40.0], [50.0]])}
    out1 = pool(third, torch.Generator().manual_seed(0))
    assert set(out1["lq"].flatten().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert torch.equal(out1["gt"], out1["lq"] * 10)  # pairs stay together
    again = TrainingPairPool(4)
    again.load_state_dict(state)
    out2 = again(third, torch.Generator().manual_seed(0))
    assert torch.equal(out1["lq"], out2["lq"])
    with pytest.raises(ValueError, match="divisible"):
        TrainingPairPool(5)(first)


def test_noise_models():
    g = torch.Generator().manual_seed(0)
    x = torch.full((2, 3, 64, 64), 0.5)
    y = gaussian_noise(x, torch.tensor([0.1, 0.1]), torch.tensor([False, True]), g) - x
    assert abs(y[0].std().item() - 0.1) < 0.01
    assert torch.equal(y[1, 0], y[1, 1]) and not torch.equal(y[0, 0], y[0, 1])  # grey noise shared
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64).contiguous()
    p = poisson_noise(ramp, torch.tensor([1.0, 1.0]), torch.tensor([False, True]), g) - ramp
    assert abs(p.mean().item()) < 0.01 and p.std().item() > 0.005
    assert torch.equal(p[1, 0], p[1, 2])
    j = jpeg_roundtrip(ramp, [100, 30])
    assert (j[0] - ramp[0]).abs().max() < 4 / 255 and (j[1] - ramp[1]).abs().mean() > (j[0] - ramp[0]).abs().mean()


def test_motion_kernels_real_and_trajectories():
    bank = load_kernels(shared_data("deblur", "kernels"))
    assert len(bank) >= 14  # 12 in kernels_12.mat + 2 PNGs (+ 8 Levin kernels when h5py is installed)
    for k in bank:
        assert abs(float(k.sum()) - 1) < 1e-6 and k.min() >= 0
        c = center_on_canvas(k, 71)
        ys = torch.arange(71, dtype=torch.float64)
        assert abs(float((c.sum(1) * ys).sum()) - 35) <= 0.5 and abs(float((c.sum(0) * ys).sum()) - 35) <= 0.5
    traj = random_trajectory_kernels(16, 31, (5, 25), generator=torch.Generator().manual_seed(0))
    assert traj.shape == (16, 31, 31) and traj.min() >= 0
    assert torch.allclose(traj.sum((1, 2)), torch.ones(16, dtype=traj.dtype))
    supports = [_support(k) for k in traj]
    assert min(supports) >= 2 and sum(supports) / len(supports) > 6  # strokes, not points

    deg = build_degradation("motion_blur", kernel_dir=shared_data("deblur", "kernels"))
    out = deg(torch.rand(3, 3, 80, 80), torch.Generator().manual_seed(2))
    assert out["kernel"].shape[0] == 3 and out["kernel"].shape[-1] % 2 == 1
    assert torch.allclose(out["kernel"].sum((1, 2)), torch.ones(3), atol=1e-5)


def test_mat_reader_matches_scipy():
    scipy_io = pytest.importorskip("scipy.io")
    from diffir.data.matfile import read_mat

    path = shared_data("deblur", "kernels", "kernels_12.mat")  # stand-in: written by scipy, compressed
    ours, ref = read_mat(path)["kernels"], scipy_io.loadmat(str(path))["kernels"]
    assert ours.shape == ref.shape
    for i in range(ref.shape[1]):
        assert (ours[0, i] == ref[0, i]).all()


def test_progressive_schedule_and_cut_batch():
    s = ProgressiveSchedule([92, 80, 38], batch_sizes=[8, 4, 2], patch_sizes=[192, 256, 320])
    assert s.at(1) == (8, 192) and s.at(92) == (8, 192) and s.at(93) == (4, 256) and s.at(10**6) == (2, 320)
    gt = torch.rand(8, 3, 64, 64)
    batch = {"gt": gt, "lq": gt[..., ::4, ::4].clone(), "path": [str(i) for i in range(8)]}
    out = cut_batch(batch, 3, 32, torch.Generator().manual_seed(0), scales={"lq": 4})
    assert out["gt"].shape == (3, 3, 32, 32) and out["lq"].shape == (3, 3, 8, 8) and len(out["path"]) == 3
    assert torch.equal(out["gt"][..., ::4, ::4], out["lq"])  # same window for LQ and GT
    with pytest.raises(ValueError):
        ProgressiveSchedule([1, 2], [1], [1, 2])


def test_unknown_degradation_name():
    with pytest.raises(ConfigError, match="did you mean 'realesrgan_x4'"):
        build_degradation("realesrgan_4x")
    with pytest.raises(ConfigError, match="bad options"):
        build_degradation("bicubic_x4", sigma=3)


def test_levin_v73_kernels_with_h5py():
    pytest.importorskip("h5py")
    from diffir.data.matfile import read_mat

    cells = read_mat(require_shared("data", "deblur", "kernels", "Levin09.mat"))["kernels"].ravel()
    assert [c.shape[0] for c in cells] == [19, 17, 15, 27, 13, 21, 23, 23]
    assert all(abs(c.sum() - 1) < 1e-9 for c in cells)
