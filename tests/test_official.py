"""The catalogue of officially released checkpoints (diffir.official) agrees with the presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from diffir.io.locate import convert_command
from diffir.official import OFFICIAL_WEIGHTS, OfficialWeights, official_for
from diffir.registry import get_config, preset_names

_IDS = [w.install_name for w in OFFICIAL_WEIGHTS]


def test_catalogue_is_not_empty_and_covers_every_task() -> None:
    assert {w.task for w in OFFICIAL_WEIGHTS} == {"sr", "realsr", "deblur", "inpaint"}
    assert {w.architecture for w in OFFICIAL_WEIGHTS} == {"diffir", "hidiff"}


@pytest.mark.parametrize("w", OFFICIAL_WEIGHTS, ids=_IDS)
def test_preset_exists_and_agrees(w: OfficialWeights) -> None:
    assert w.preset in preset_names()
    assert w.preset.startswith(f"{w.architecture}_")
    config = get_config(w.preset)
    # The catalogue tells bicubic SR ("sr") from real-world SR ("realsr") because users pick weights by that;
    # the code has one SR architecture (DiffIRConfig.task == "sr" for both diffir_sr_* and diffir_realsr_*
    # presets: the networks are identical, only the training degradations differ), so "realsr" maps to "sr".
    expected_task = "sr" if w.task == "realsr" else w.task
    assert config.task == expected_task
    assert config.scale == w.scale
    assert w.preset.startswith(f"diffir_{w.task}_") or w.architecture == "hidiff"


def test_install_names_unique_and_not_presets() -> None:
    names = [w.install_name for w in OFFICIAL_WEIGHTS]
    assert len(names) == len(set(names))
    assert not set(names) & set(preset_names())  # a preset name means random weights, never installed ones
    assert len({w.file.lower() for w in OFFICIAL_WEIGHTS}) == len(OFFICIAL_WEIGHTS)


@pytest.mark.parametrize("w", OFFICIAL_WEIGHTS, ids=_IDS)
def test_official_for_finds_each_entry(w: OfficialWeights) -> None:
    assert official_for(w.file) is w
    assert official_for(w.file.upper()) is w
    assert official_for(w.source) is w
    assert official_for(f"Downloads/{w.source}") is w
    assert official_for(w.install_name) is w
    assert official_for(f"{w.install_name}.safetensors") is w
    for alias in w.aliases:
        assert official_for(alias) is w


def test_official_for_short_names_and_ambiguity() -> None:
    assert official_for("diffirs2-ganx4.PTH").install_name == "diffir_realsr_x4_gan"  # type: ignore[union-attr]
    assert official_for("DiffIRS2-GANx4").install_name == "diffir_realsr_x4_gan"  # type: ignore[union-attr]
    assert official_for("experiments/DiffIRS2-GAN.pth").install_name == "diffir_realsr_x4_gan"  # type: ignore[union-attr]
    assert official_for("C:\\weights\\DiffIRS2-GANx4-V2.pth").install_name == "diffir_realsr_x4_gan_v2"  # type: ignore[union-attr]
    assert official_for("HI_Diff_GoPro").install_name == "hidiff_gopro"  # type: ignore[union-attr]
    assert official_for("experiments/pretrained_models/HI_Diff_RealBlur_R/").preset == "hidiff_realblur_r_s2"  # type: ignore[union-attr]
    assert official_for("DiffIRS2-celeba").install_name == "diffir_inpaint_celeba"  # type: ignore[union-attr]
    # names shared by several releases identify none of them
    for ambiguous in ("net_g_latest.pth", "last.ckpt", "net_g.pth", "DiffIR-SRGAN", "models", ""):
        assert official_for(ambiguous) is None
    assert official_for("not_a_release.pth") is None
    assert official_for("diffir_realsr_x4_s2") is None  # a preset, not a release


def test_convert_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIFFIR_MODELS", str(tmp_path / "models"))
    w = official_for("DiffIRS2-GANx4.pth")
    assert w is not None
    # the folder is written out: $DIFFIR_MODELS may be unset in the user's shell
    assert convert_command(w) == f"diffir convert DiffIRS2-GANx4.pth {tmp_path}/models/diffir_realsr_x4_gan.safetensors"
    h = official_for("hidiff_gopro")
    assert h is not None and h.per_network
    # HI-Diff: the folder of per-network files is the input (README "HI-Diff", `diffir convert -h`)
    assert convert_command(h) == f"diffir convert HI_Diff_GoPro/ {tmp_path}/models/hidiff_gopro.safetensors"
    for w in OFFICIAL_WEIGHTS:
        cmd = convert_command(w)
        assert cmd.startswith("diffir convert ") and cmd.endswith(f"/{w.install_name}.safetensors")
        assert " (" not in cmd


def test_installing_an_official_file_makes_it_usable_by_name(tmp_path, monkeypatch, capsys) -> None:
    """The README's steps: convert the released file into the models folder, then use its name anywhere."""
    import diffir
    from diffir.cli import main

    monkeypatch.setenv("DIFFIR_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    w = official_for("DiffIRS2-GANx4.pth")
    released = tiny_model(w.preset)  # stands in for the released file, in the official BasicSR layout
    diffir.save_model(released, tmp_path / w.file, official=True)
    assert main(["list", "--official", "DiffIRS2-GANx4.pth"]) == 0
    assert f"not installed as {w.install_name}" in capsys.readouterr().out
    assert main(convert_command(w).split()[1:]) == 0
    capsys.readouterr()
    assert main(["list", "--official", "DiffIRS2-GANx4.pth"]) == 0
    assert f"installed as {w.install_name}" in capsys.readouterr().out.replace("not installed", "")
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert listing.index(w.install_name) > listing.index("installed in")
    by_name = diffir.load_model(w.install_name)
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(),
                                                  released.state_dict().values(), strict=True))
    assert diffir.Restorer(w.install_name).scale == 4


def test_the_readme_lists_every_released_file() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Official weights"):]
    for w in OFFICIAL_WEIGHTS:
        assert f"| `{w.file}` |" in section and f"`{w.install_name}`" in section, w.file
