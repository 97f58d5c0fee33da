"""diffir.Restorer: equivalence with the model, one shared IPR, tiling ≈ whole image, kinds in = kinds out,
gray/alpha, inpainting masks, seeds, precision fallback, OOM retry, model lookup."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import diffir
from conftest import shared_data, tiny_model
from diffir.errors import DiffIRError, ImageError
from diffir.nn.padding import pad_to_multiple


@pytest.fixture(scope="module")
def sr4():
    return tiny_model("diffir_sr_x4_s2")


@pytest.fixture(scope="module")
def inpainter():
    return tiny_model("diffir_inpaint_celeba_s2")


def _real(rel: str, crop: int | None = None) -> np.ndarray:
    """A real image of the shared data (a generated stand-in of the same size without the shared folder)."""
    a = np.asarray(Image.open(shared_data(*rel.split("/"))).convert("RGB"))
    return a[:crop, :crop] if crop else a


@pytest.mark.parametrize("preset", ["diffir_sr_x4_s2", "diffir_sr_x2_s2", "diffir_deblur_s2"])
def test_untiled_restore_is_the_seeded_model_output(preset: str) -> None:
    model = tiny_model(preset)
    x = torch.rand(1, 3, 21, 35)  # odd sizes: padded for the network, cropped back
    out = diffir.Restorer(model, tile=0, seed=7).restore(x)
    with torch.no_grad():
        ref = model(pad_to_multiple(x, model.config.size_multiple), generator=torch.Generator().manual_seed(7))
    s = model.config.scale
    assert out.shape == (1, 3, 21 * s, 35 * s)
    assert torch.allclose(out, ref[..., : 21 * s, : 35 * s].clamp(0, 1), atol=1e-6)


def test_all_tiles_share_the_whole_image_ipr(sr4, monkeypatch) -> None:
    x = torch.rand(1, 3, 24, 32)
    seen: list[torch.Tensor] = []
    restore = type(sr4).restore

    def spy(self, lq, prior):
        seen.append(prior.clone())
        return restore(self, lq, prior)

    monkeypatch.setattr(type(sr4), "restore", spy)
    diffir.Restorer(sr4, tile=16, tile_overlap=8, seed=3).restore(x)
    with torch.no_grad():
        expected = sr4.sample_prior(sr4.condition_of(x), generator=torch.Generator().manual_seed(3))
    assert len(seen) == 6  # 2 x 3 tiles
    for ipr in seen:
        assert torch.allclose(ipr, expected, atol=1e-6)


@pytest.mark.parametrize("rel", ["realsr/RealSR/LR/Canon_001_LR4.png", "sr/Set5/LR_bicubic/X4/babyx4.png"])
def test_tiled_close_to_whole_image_on_real_images(sr4, rel: str) -> None:
    # Tiles see the same IPR, so what differs is only the DIRformer's context (its channel attention pools
    # over the tile, not the image); blending keeps that within 2/255 here.  See docs/restore.md, Tiling.
    image = _real(rel, crop=128)
    whole = diffir.Restorer(sr4, tile=0).restore(image).astype(int)
    tiled = diffir.Restorer(sr4, tile=48, tile_overlap=16).restore(image).astype(int)
    assert tiled.shape == whole.shape == (512, 512, 3)
    assert np.abs(tiled - whole).max() <= 2
    # The check has teeth: the same tiles pasted without overlap differ by tens of levels at their borders.
    pasted = diffir.Restorer(sr4, tile=48, tile_overlap=0).restore(image).astype(int)
    assert np.abs(pasted - whole).max() > 10


@pytest.mark.parametrize("rel", ["realsr/RealSR/LR/Canon_003_LR4.png", "sr/Set5/LR_bicubic/X4/babyx4.png"])
def test_tiled_close_to_whole_image_with_the_trained_bundled_model(rel: str) -> None:
    # The trained model uses its channel attention far more than random weights do, so this is the real check.
    # 48-px tiles: 9 tiles on a 128² LR.  Measurements in docs/restore.md, "Tiling".
    image = _real(rel)
    whole_restorer = diffir.Restorer("diffir_sr_x4_small", tile=0)
    model = whole_restorer.model
    whole = whole_restorer.restore(image).astype(int)
    tiled = diffir.Restorer(model, tile=48, tile_overlap=16).restore(image).astype(int)
    assert tiled.shape == whole.shape == (512, 512, 3)
    assert np.abs(tiled - whole).max() <= 1  # the issue asks <= 2/255
    # Whole-image attention statistics are what keeps it there: tile-local ones drift several times further.
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    whole_f = whole_restorer.restore(x)
    drift = {stats: (diffir.Restorer(model, tile=48, tile_overlap=16, tile_stats=stats).restore(x) - whole_f)
             .abs().max().item() for stats in ("global", "local")}
    assert drift["local"] > 2 * drift["global"], drift
    pasted = diffir.Restorer(model, tile=48, tile_overlap=0).restore(image).astype(int)
    assert np.abs(pasted - whole).max() > 10  # without blending the seams are plain to see


def test_tiled_close_to_whole_image_for_deblurring() -> None:
    model = tiny_model("diffir_deblur_s2")
    image = _real("deblur/real_pairs/blur/DeepDeblur_Flower1.png", crop=256)
    whole = diffir.Restorer(model, tile=0).restore(image).astype(int)
    tiled = diffir.Restorer(model, tile=96, tile_overlap=32).restore(image).astype(int)
    assert np.abs(tiled - whole).max() <= 2


# ----------------------------------------------------------------------------------------- kinds and layouts
@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)])
def test_numpy_in_numpy_out_same_dtype(sr4, dtype, scale) -> None:
    rng = np.random.default_rng(0)
    a = (rng.random((9, 13, 3)) * scale).astype(dtype)
    out = diffir.Restorer(sr4).restore(a)
    assert out.dtype == dtype and out.shape == (36, 52, 3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_result_conversion_in_bands_equals_the_whole_image_formula(monkeypatch, dtype) -> None:
    """The float → array conversion runs a band of rows at a time (bounded memory for 4K results); bands of
    2 rows over 7 (a short last band) must give exactly clamp, scale, round, cast of the whole image."""
    from diffir.pipelines import convert

    monkeypatch.setattr(convert, "_CHUNK_VALUES", 2 * 5 * 3)
    y = torch.from_numpy(np.random.default_rng(2).uniform(-0.2, 1.2, (3, 7, 5)).astype(np.float32))
    whole = y.permute(1, 2, 0).clamp(0, 1).numpy()
    if dtype in (np.uint8, np.uint16):
        whole = np.rint(whole * np.iinfo(dtype).max).astype(dtype)
    out = convert._to_array(y, np.dtype(dtype))
    assert out.dtype == dtype and np.array_equal(out, whole)


def test_same_image_same_result_whatever_the_kind(sr4) -> None:
    a = (np.random.default_rng(1).random((8, 8, 3)) * 255).astype(np.uint8)
    r = diffir.Restorer(sr4)
    from_numpy = r.restore(a)
    from_pil = np.asarray(r.restore(Image.fromarray(a)))
    from_tensor = r.restore(torch.from_numpy(a).permute(2, 0, 1).contiguous())  # uint8 CHW tensor
    assert np.array_equal(from_numpy, from_pil)
    assert np.array_equal(from_numpy, from_tensor.permute(1, 2, 0).numpy())


def test_tensor_batches_restore_each_image_as_if_alone(sr4) -> None:
    x = torch.rand(2, 3, 8, 16)
    r = diffir.Restorer(sr4)
    both = r.restore(x)
    assert both.shape == (2, 3, 32, 64) and both.dtype == torch.float32
    assert torch.allclose(both[1:], r.restore(x[1:]), atol=1e-6)
    assert r.restore(x[0]).shape == (3, 32, 64)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "I;16", "P", "1"])
def test_pil_modes(sr4, mode: str) -> None:
    rgba = (np.random.default_rng(2).random((8, 12, 4)) * 255).astype(np.uint8)
    if mode == "I;16":
        im = Image.fromarray(rgba[..., 0].astype(np.uint16) * 257)
    else:
        im = Image.fromarray(rgba, mode="RGBA").convert(mode)
    out = diffir.Restorer(sr4).restore(im)
    expected = {"P": "RGB", "1": "L"}.get(mode, mode)
    assert out.mode == expected and out.size == (48, 32)


def test_gray_stays_gray_and_alpha_is_carried(sr4) -> None:
    gray = (np.random.default_rng(3).random((10, 10)) * 255).astype(np.uint8)
    out = diffir.Restorer(sr4).restore(gray)
    assert out.shape == (40, 40) and out.dtype == np.uint8
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[:, :5, 3] = 255  # left half opaque, right half transparent
    out = diffir.Restorer(sr4).restore(rgba)
    assert out.shape == (40, 40, 4)
    assert (out[:, :16, 3] == 255).all() and (out[:, 24:, 3] == 0).all()  # resized, edges away from the step


def test_float_images_outside_0_1_are_refused(sr4) -> None:
    with pytest.raises(ImageError, match=r"must be in \[0, 1\].*divide 8-bit data by 255"):
        diffir.Restorer(sr4).restore(np.full((8, 8, 3), 200.0, np.float32))
    with pytest.raises(ImageError, match=r"must be in \[0, 1\]"):
        diffir.Restorer(sr4).restore(torch.full((3, 8, 8), 255.0))


def test_outscale_and_tiny_sizes(sr4) -> None:
    r = diffir.Restorer(sr4, outscale=2.5)
    assert r.restore(np.zeros((7, 10, 3), np.uint8)).shape == (18, 25, 3)  # round(7·2.5)=18 (banker's)
    one = diffir.Restorer(sr4).restore(np.full((1, 1, 3), 200, np.uint8))
    assert one.shape == (4, 4, 3)


# ----------------------------------------------------------------------------------------- inpainting
def test_inpainting_keeps_known_pixels_and_accepts_any_mask_kind(inpainter) -> None:
    image = _real("inpaint/fixtures/EC_celeba/images/celeba_01.png", crop=48)
    mask8 = np.asarray(Image.open(shared_data("inpaint", "fixtures", "EC_celeba", "masks",
                                              "celeba_01.png")).convert("L"))[:48, :48]
    r = diffir.Restorer(inpainter)
    out = r.restore(image, mask=mask8)
    known = mask8 <= 127
    assert np.array_equal(out[known], image[known])
    for other in (mask8 > 127, Image.fromarray(mask8).convert("1"), np.repeat(mask8[..., None], 3, 2),
                  torch.from_numpy(mask8 > 127), (mask8 > 127).astype(np.uint8)):  # the last: 0/1, not 0/255
        assert np.array_equal(r.restore(image, mask=other), out)


def test_inpainting_mask_errors(inpainter, sr4) -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ImageError, match="mask is 8x16 but the image is 16x16"):
        diffir.Restorer(inpainter).restore(image, mask=np.zeros((16, 8), np.uint8))
    with pytest.raises(DiffIRError, match="pass a mask"):
        diffir.Restorer(inpainter).restore(image)
    with pytest.raises(DiffIRError, match="not inpainting"):
        diffir.Restorer(sr4).restore(image, mask=np.zeros((16, 16), np.uint8))


# ----------------------------------------------------------------------------------------- seeds, precision, OOM
def test_seed_makes_sampling_reproducible(sr4) -> None:
    x = torch.rand(1, 3, 16, 16)
    a = diffir.Restorer(sr4, seed=1).restore(x)
    assert torch.equal(a, diffir.Restorer(sr4, seed=1).restore(x))
    assert not torch.equal(a, diffir.Restorer(sr4, seed=2).restore(x))
    assert diffir.Restorer(sr4, seed=None).restore(x).shape == a.shape


def test_bf16_is_close_to_fp32(sr4) -> None:
    x = torch.rand(1, 3, 16, 16)
    fp32 = diffir.Restorer(sr4).restore(x)
    # The network's convolutions must really compute in bf16 (not a silent float32 run with the same result).
    convs = [m for m in sr4.G.modules() if isinstance(m, torch.nn.Conv2d)]
    dtypes: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype)) for m in convs]
    try:
        bf16 = diffir.Restorer(sr4, precision="bf16").restore(x)
    finally:
        for h in hooks:
            h.remove()
    assert convs and dtypes == {torch.bfloat16}
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert 0 < (bf16 - fp32).abs().max() < 0.05


def test_nan_in_reduced_precision_falls_back_to_fp32(sr4, monkeypatch) -> None:
    r = diffir.Restorer(sr4, precision="bf16", tile=8, tile_overlap=0)
    original = r.model.G.forward

    def broken_in_half(lq, ipr):  # stands in for an fp16 overflow
        out = original(lq, ipr)
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out

    monkeypatch.setattr(r.model.G, "forward", broken_in_half)
    x = torch.rand(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="recomputing in float32"):
        out = r.restore(x)
    assert torch.allclose(out, diffir.Restorer(sr4, tile=8, tile_overlap=0).restore(x), atol=1e-6)
    assert r.dtype == torch.float32


def test_out_of_memory_halves_the_tile(sr4, monkeypatch) -> None:
    r = diffir.Restorer(sr4, tile=0)
    original = r.model.G.forward
    sizes: list[int] = []

    def small_gpu(lq, ipr):
        sizes.append(lq.shape[-1])
        if lq.shape[-1] > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(lq, ipr)

    monkeypatch.setattr(r.model.G, "forward", small_gpu)
    x = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = r.restore(x)
    assert out.shape == (1, 3, 128, 128)
    assert sizes[0] == 32 and max(sizes[1:]) == 16
    assert any("retrying with tile 16" in str(w.message) for w in caught)


# ----------------------------------------------------------------------------------------- model lookup
def test_model_by_name_from_the_models_folder(sr4, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIFFIR_MODELS", str(tmp_path))
    diffir.save_model(sr4, tmp_path / "my_sr.safetensors")
    r = diffir.Restorer("my_sr")
    assert r.task == "sr" and r.scale == 4
    with pytest.raises(DiffIRError, match=r"no model named .nope.*diffir convert"):
        diffir.Restorer("nope")
    with pytest.raises(DiffIRError, match="no such file or folder"):
        diffir.Restorer(str(tmp_path / "missing.pth"))


def test_stage_one_models_are_refused() -> None:
    with pytest.raises(DiffIRError, match="stage-1"):
        diffir.Restorer(tiny_model("diffir_sr_x4_s1"))


def test_nan_even_in_fp32_is_an_error_not_a_black_image(sr4, monkeypatch) -> None:
    r = diffir.Restorer(sr4)
    monkeypatch.setattr(r.model.G, "forward", lambda lq, ipr: torch.full_like(lq, float("nan")).repeat(
        1, 1, 4, 4))
    with pytest.raises(DiffIRError, match="NaN/Inf even in float32"):
        r.restore(np.zeros((8, 8, 3), np.uint8))


def test_a_training_run_folder_is_a_model_and_unknown_names_get_a_suggestion(sr4, tmp_path, monkeypatch) -> None:
    run = tmp_path / "runs" / "tiny_sr_x4_s2"
    run.mkdir(parents=True)
    diffir.save_model(sr4, run / "model.safetensors")
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(diffir.Restorer(run).restore(x), diffir.Restorer(sr4).restore(x))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffIRError, match="looked for model.safetensors"):
        diffir.Restorer(tmp_path / "empty")
    monkeypatch.setenv("DIFFIR_MODELS", str(tmp_path / "models"))
    with pytest.raises(DiffIRError) as info:
        diffir.Restorer("diffir_sr_x4_smal")
    text = str(info.value)
    assert "did you mean 'diffir_sr_x4_small', the bundled model?" in text
    assert "--model" not in text and "checkpoint file or run folder path" in text


def test_mask_hole_black_is_the_inverted_white_mask(inpainter) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    white = np.zeros((16, 16), np.uint8)
    white[4:10, 5:12] = 255
    expected = diffir.Restorer(inpainter).restore(image, mask=white)
    assert np.array_equal(diffir.Restorer(inpainter, mask_hole="black").restore(image, mask=255 - white), expected)
    with pytest.raises(DiffIRError, match="mask_hole must be 'white' or 'black'"):
        diffir.Restorer(inpainter, mask_hole="grey")
