"""HI-Diff in the house: official per-network checkpoints, loader hints, exact tiled condition, tiled restore,
CLI restore/info/convert.  Parity with the official code is in test_parity_hidiff.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import diffir
from conftest import require_shared
from diffir.archs.hidiff.model import HIDiffS1, HIDiffS2
from diffir.cli import main
from diffir.errors import CheckpointError, ConfigError
from diffir.pipelines.prior import adaptive_bins, condition_tiled

TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=8,
            encoder_blocks=1, denoiser_inner_channels=16)


def tiny(preset: str = "hidiff_gopro_s2", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return diffir.create_model(preset, **{**TINY, **overrides}).eval()


def _seeded(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def official_folder(tmp_path_factory):
    """A tiny stage-2 model written in the official layout (a folder of net_*.pth {'params': sd})."""
    model = tiny()
    folder = tmp_path_factory.mktemp("hidiff") / "HI_Diff_tiny"
    diffir.save_model(model, folder, official=True)
    return model, folder


def test_official_layout_is_one_params_file_per_network(official_folder) -> None:
    model, folder = official_folder
    assert sorted(p.name for p in folder.iterdir()) == ["net_d.pth", "net_g.pth", "net_le_dm.pth"]
    g = torch.load(folder / "net_g.pth", weights_only=True)
    assert list(g) == ["params"] and list(g["params"]) == list(model.G.state_dict())  # bare keys, module order


def test_folder_files_and_comma_list_load_the_same_model(official_folder) -> None:
    model, folder = official_folder
    x = torch.rand(1, 3, 24, 40)
    want = _seeded(model, x)
    files = [folder / "net_g.pth", folder / "net_le_dm.pth", folder / "net_d.pth"]
    for src in (folder, files, list(reversed(files))):  # roles come from the tensors, not the order
        loaded = diffir.load_model(src)
        assert isinstance(loaded, HIDiffS2) and loaded.descriptor.architecture == "hidiff"
        assert loaded.config == model.config  # T, β and path: the GoPro preset's, as for this model
        assert {"diffusion_path", "linear_end", "linear_start",
                "timesteps"} <= set(loaded.config.meta["assumed"])
        assert torch.equal(_seeded(loaded, x), want)


def test_what_the_files_do_not_store_comes_from_a_preset_or_keywords(tmp_path) -> None:
    model = tiny("hidiff_realblur_r_s2")  # simple_denoise: the RealBlur preset is assumed from the tensors
    diffir.save_model(model, tmp_path / "rb", official=True)
    loaded = diffir.load_model(tmp_path / "rb")
    assert (loaded.config.timesteps, loaded.config.diffusion_path) == (16, "ldm")
    assert diffir.load_model(tmp_path / "rb", timesteps=4).config.timesteps == 4
    gopro_path = diffir.load_model(tmp_path / "rb", preset="hidiff_gopro")
    assert (gopro_path.config.timesteps, gopro_path.config.diffusion_path) == (8, "eps")
    assert "timesteps" not in diffir.load_model(tmp_path / "rb", preset="hidiff_realblur_r").config.meta["assumed"]
    with pytest.raises(CheckpointError, match="unknown HI-Diff preset 'hidiff_nope'"):
        diffir.load_model(tmp_path / "rb", preset="hidiff_nope")


def test_missing_network_is_one_line_naming_what_to_supply(official_folder, tmp_path) -> None:
    _, folder = official_folder
    with pytest.raises(CheckpointError) as info:
        diffir.load_model([folder / "net_g.pth", folder / "net_le_dm.pth"])
    text = str(info.value)
    assert "\n" not in text and "needs net_g, net_le_dm, net_d" in text and "also give net_d" in text
    stray = tmp_path / "stray.pth"
    torch.save({"params": {"conv.weight": torch.zeros(1)}}, stray)
    with pytest.raises(CheckpointError, match="not a HI-Diff network"):
        diffir.load_model([folder / "net_g.pth", stray])


def test_stage1_folder_loads_as_stage1(tmp_path) -> None:
    s1 = tiny("hidiff_gopro_s1")
    diffir.save_model(s1, tmp_path / "s1", official=True)
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["net_g.pth", "net_le.pth"]
    loaded = diffir.load_model(tmp_path / "s1")
    assert isinstance(loaded, HIDiffS1)
    lq, gt = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(loaded(lq, gt), s1(lq, gt))


def test_safetensors_round_trip_and_official_suffix_error(official_folder, tmp_path) -> None:
    model, _ = official_folder
    path = diffir.save_model(model, tmp_path / "m.safetensors")
    loaded = diffir.load_model(path)
    assert loaded.config == model.config and loaded.config.meta["assumed"] == []
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    with pytest.raises(CheckpointError, match="one file per network; give a folder"):
        diffir.save_model(model, tmp_path / "x.pth", official=True)


def test_tiled_condition_is_exact_with_overlapping_pool_bins() -> None:
    model = tiny()
    # 72×104 LQ → LE features 18×26: 4 bins per axis overlap (18/4, 26/4 are not integers)
    assert adaptive_bins(18, 4) == [(0, 5), (4, 9), (9, 14), (13, 18)]
    x = torch.rand(1, 3, 72, 104)
    with torch.no_grad():
        whole = model.condition_of(x)
        for tile in (16, 32, 48):
            assert torch.allclose(condition_tiled(model, x, tile, torch.device("cpu")), whole, atol=1e-5), tile


def test_tiled_restore_with_whole_image_statistics(official_folder) -> None:
    # Untrained weights amplify context differences (a trained tiny model: <= 1/255, docs/restore.md); what is
    # checked here is that the MDTA layers of HI-Diff do take the whole-image statistics.
    model, _ = official_folder
    x = torch.rand(1, 3, 64, 96)
    whole = diffir.Restorer(model, tile=0).restore(x)
    diffs = {}
    for stats in ("global", "local"):
        tiled = diffir.Restorer(model, tile=32, tile_overlap=16, tile_stats=stats).restore(x)
        diffs[stats] = (tiled - whole).abs()
    assert diffs["global"].max() < 4 / 255
    assert diffs["global"].mean() < 0.75 * diffs["local"].mean()


def test_padding_crops_back_and_matches_the_padded_model(official_folder) -> None:
    model, _ = official_folder
    x = torch.rand(1, 3, 21, 35)
    out = diffir.Restorer(model, tile=0, seed=5).restore(x)
    padded = torch.nn.functional.pad(x, (0, 5, 0, 3), mode="reflect")
    assert out.shape == x.shape
    assert torch.allclose(out, _seeded(model, padded)[..., :21, :35].clamp(0, 1), atol=1e-6)


def test_ablation_switches_are_rejected_for_hidiff() -> None:
    with pytest.raises(ConfigError, match="ablation switches"):
        tiny().set_ablation(enabled=False)


def test_cli_restore_info_convert(official_folder, tmp_path, capsys) -> None:
    model, folder = official_folder
    img = tmp_path / "in" / "blurry.png"
    img.parent.mkdir()
    from PIL import Image

    Image.fromarray((torch.rand(40, 56, 3) * 255).byte().numpy()).save(img)
    comma = ",".join(str(folder / n) for n in ("net_g.pth", "net_le_dm.pth", "net_d.pth"))
    for spec, out in ((str(folder), "a"), (comma, "b")):
        assert main(["restore", "-m", spec, "-i", str(img), "-o", str(tmp_path / out), "-q"]) == 0
    a, b = (Image.open(tmp_path / o / "blurry_out.png") for o in "ab")
    assert a.size == (56, 40) and a.tobytes() == b.tobytes()
    capsys.readouterr()
    for spec in (str(folder), comma):
        assert main(["info", spec, "--no-macs"]) == 0
        info = capsys.readouterr().out
        assert "HIDiffS2" in info and "LE_DM" in info and "official defaults assumed: timesteps" in info
    assert main(["convert", str(folder), str(tmp_path / "one.safetensors")]) == 0
    assert diffir.load_model(tmp_path / "one.safetensors").config == model.config
    assert main(["convert", str(tmp_path / "one.safetensors"), str(tmp_path / "back")]) == 0
    back = diffir.load_model(tmp_path / "back")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values(), strict=True))


def test_parity_weights_load_with_zero_config() -> None:
    """The official-layout state_dicts of the reference vectors load by tensors alone (+ the case's T/β/path
    as keywords, which no official file stores) and give the official seeded output."""
    folder = require_shared("parity", "hidiff")
    for case in sorted(p.stem for p in folder.glob("*.json") if p.stem != "released_layout"):
        meta = json.loads((folder / f"{case}.json").read_text())
        sched = meta["diffusion_schedule"]
        files = [folder / f"{case}.{n}.safetensors" for n in ("net_g", "net_le_dm", "net_d")]
        d_timesteps = meta["network_d"].get("timesteps", 5)
        model = diffir.load_model(files, timesteps=sched["timesteps"], linear_start=sched["linear_start"],
                                  linear_end=sched["linear_end"], denoiser_timesteps=d_timesteps,
                                  diffusion_path="ldm" if sched["apply_ldm"] else "eps")
        ref = load_file(str(folder / f"{case}.tensors.safetensors"))
        torch.manual_seed(meta["seeds"]["eval"])
        with torch.no_grad():
            out = model(ref["in.lq"])
        assert torch.allclose(out, ref["s2e.out"], atol=1e-5, rtol=1e-5), case


def test_loading_never_imports_torch_pickles_unsafely(official_folder, tmp_path) -> None:
    _, folder = official_folder
    code = ("import pickle, torch, diffir, sys\n"
            "class Evil:\n    def __reduce__(self): return (sys.exit, (7,))\n"
            f"torch.save({{'params': Evil()}}, r'{tmp_path}/net_g.pth')\n"
            f"import shutil; shutil.copy(r'{folder}/net_d.pth', r'{tmp_path}/net_d.pth')\n"
            "try:\n    diffir.load_model(r'" + str(tmp_path) + "')\nexcept diffir.errors.DiffIRError as e:\n"
            "    print('refused', e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "refused" in res.stdout, res.stderr
