"""DiffBIR training through the engine (``diffir train``): stage 1 (the cleaner, sum-MSE), stage 2 (the ControlNet
only, eps or v, noise augmentation), bit-exact resume, the start from official files, restoring the run and
exporting it in the official layout.  Tiny pipelines (diffbir_tiny_s1/s2) on 64-px crops of real images from
../shared/data (generated stand-ins without it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import diffir
from conftest import REPO, shared_data
from diffir.archs.generation import GenerationOptions
from diffir.cli import main
from diffir.errors import ConfigError
from diffir.train.engine import Trainer
from diffir.train.loading import parse_config
from test_train_loop import _merge, crash_and_resume


def diffbir_config(stage: str, **changes):
    data = shared_data()
    model = {"preset": f"diffbir_tiny_s{1 if stage == 's1' else 2}", **({"base": "random"} if stage == "s2" else {})}
    base = {
        "name": f"test_diffbir_{stage}",
        "stage": stage,
        "model": model,
        "data": {"train": {"kind": "diffbir", "gt_dir": str(data / "train" / "T91"), "patch_size": 64}},
        "train": {"iters": 6, "batch_size": 2, "ema_decay": 0.9},
        "optim": {"g": {"type": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.01}},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 1000, "keep": 5},
    }
    return parse_config(_merge(base, changes))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cleaner(tmp_path_factory) -> Path:
    """A (random) stage-1 cleaner in diffir's format, as a stage-1 run leaves it."""
    torch.manual_seed(7)
    return diffir.save_model(diffir.create_model("diffbir_tiny_s1"),
                             tmp_path_factory.mktemp("s1") / "cleaner.safetensors")


def _mean(xs):
    return sum(xs) / len(xs)


def test_stage1_sum_mse_goes_down_and_validates_psnr(tmp_path):
    val = {"kind": "diffbir", "gt_dir": str(shared_data("sr", "Set5", "HR")), "patch_size": 64, "max_images": 1}
    cfg = diffbir_config("s1", train={"iters": 30, "batch_size": 4}, optim={"g": {"lr": 2e-3, "weight_decay": 0.0}},
                         data={"val": val}, val={"every": 30})
    t = Trainer(cfg, tmp_path / "s1")
    batch = t._next_batch(1)
    t._loader = t._make_loader()
    with torch.no_grad():  # the logged loss is the official one: sum of squared errors against (gt+1)/2 in [0, 1]
        pred = t.student.cleaner(batch["lq"])
    loss, _ = t.student.training_loss(batch, torch.Generator())
    assert loss.item() == pytest.approx(((pred - batch["gt"]) ** 2).sum().item(), rel=1e-5)
    before = loss.item()  # on that fixed batch of real crops (the logged losses vary with each batch's degradations)
    t.fit()
    after = t.student.training_loss(batch, torch.Generator())[0].item()
    losses = [r["loss_mse_sum"] for r in records(tmp_path / "s1")]
    print("stage-1 sum-MSE on the probe", before, after, "logged", [round(x) for x in losses])
    assert after < 0.8 * before, (before, after)
    assert _mean(losses[15:]) < 0.9 * _mean(losses[:15]), losses
    psnr = json.loads((tmp_path / "s1" / "val.jsonl").read_text().splitlines()[-1])["psnr"]
    assert 8 < psnr < 60
    assert diffir.load_model(tmp_path / "s1").config.stage == 1


def _split_state(model) -> tuple[dict, dict]:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    control = {k: v for k, v in sd.items() if k.startswith("cldm.controlnet.")}
    return control, {k: v for k, v in sd.items() if k not in control}


def test_stage2_trains_only_the_controlnet_and_its_loss_goes_down(tmp_path, cleaner):
    t = Trainer(diffbir_config("s2", train={"iters": 20, "batch_size": 4}), tmp_path / "s2", from_s1=str(cleaner))
    s = t.student
    # the ControlNet starts as the UNet's encoder: zero hint channels, zero convs (official B.3)
    first = s.cldm.controlnet.state_dict()["input_blocks.0.0.weight"]
    assert torch.equal(first[:, :4], s.cldm.unet.state_dict()["input_blocks.0.0.weight"])
    assert not first[:, 4:].any()
    assert all(not v.any() for k, v in s.cldm.controlnet.state_dict().items() if k.startswith(("zero_convs",
                                                                                                "middle_block_out")))
    start_cleaner = diffir.load_model(cleaner).cleaner.state_dict()
    assert all(torch.equal(v, s.cleaner.state_dict()[k]) for k, v in start_cleaner.items())
    control_before, frozen_before = _split_state(s)
    probe = t._next_batch(1)  # a fixed batch with fixed t / noise: the loss must fall on it
    t._loader = t._make_loader()

    def probe_loss() -> float:
        with torch.no_grad():
            return s.training_loss(probe, torch.Generator().manual_seed(0))[0].item()

    before = probe_loss()
    t.fit()
    after = probe_loss()
    losses = [r["loss_diffusion"] for r in records(tmp_path / "s2")]
    print("stage-2 probe loss", before, after, "logged", [round(x, 3) for x in losses])
    assert after < 0.8 * before, (before, after)
    control_after, frozen_after = _split_state(s)
    assert all(torch.equal(v, frozen_after[k]) for k, v in frozen_before.items())  # UNet, VAE, text, cleaner
    assert sum(not torch.equal(v, control_after[k]) for k, v in control_before.items()) > len(control_before) // 2
    final = load_file(str(tmp_path / "s2" / "model.safetensors"))  # the EMA pipeline: frozen parts shared, intact
    assert all(torch.equal(v, final[k]) for k, v in frozen_before.items())


def test_stage2_v_noise_aug_resume_is_bit_identical(tmp_path, cleaner):
    # the v2.1 settings: v-prediction, zero terminal SNR, noise augmentation of the condition latent
    cfg = diffbir_config("s2", model={"overrides": {"parameterization": "v", "zero_snr": True}},
                         diffusion={"noise_aug": 200}, checkpoint={"every": 3}, data={"train": {"num_workers": 1}})
    make = lambda out, **kw: Trainer(cfg, out, from_s1=str(cleaner), **kw)  # noqa: E731
    a, b = crash_and_resume(make, tmp_path)
    for f in ("params.safetensors", "params_ema.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f
    sa, sb = (torch.load(p / "state.pt", weights_only=True) for p in (a, b))
    for pid, st in sa["optimizers"]["g"]["state"].items():
        assert all(torch.equal(v, sb["optimizers"]["g"]["state"][pid][k]) for k, v in st.items())
    la, lb = ([r["loss"] for r in records(p.parents[1]) if "loss" in r] for p in (a, b))
    assert la == lb and len(la) == 6


def test_stage2_run_restores_and_exports_the_official_controlnet(tmp_path, cleaner):
    run = tmp_path / "run"
    Trainer(diffbir_config("s2", train={"iters": 2}), run, from_s1=str(cleaner)).fit()
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    out = diffir.Restorer(run, generation=GenerationOptions(steps=2)).restore(image)
    assert np.asarray(out).shape == (256, 256, 3)  # the tiny preset restores x4
    trained = diffir.load_model(run)
    folder = diffir.save_model(trained, tmp_path / "official", official=True)
    assert sorted(p.name for p in folder.iterdir()) == ["controlnet.pth", "sd.ckpt", "swinir.pth"]
    back = diffir.load_model(folder)
    want = trained.cldm.controlnet.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in back.cldm.controlnet.state_dict().items())

    # those official files start another stage 2: the SD file as model.base, the cleaner as --from-s1, and
    # (with --from-s2) the ControlNet instead of the UNet copy
    again = Trainer(diffbir_config("s2", model={"base": str(folder / "sd.ckpt")}), tmp_path / "again",
                    from_s1=str(folder / "swinir.pth"), from_s2=str(folder / "controlnet.pth"))
    got = again.student.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in trained.state_dict().items())
    # a stage-2 run as --from-s2 replaces the config's model.base (the shipped recipes always name one)
    torch.manual_seed(99)
    other = diffir.save_model(diffir.create_model("diffbir_tiny_s2"), tmp_path / "other", official=True)
    cont = Trainer(diffbir_config("s2", model={"base": str(other / "sd.ckpt")}), tmp_path / "cont", from_s2=str(run))
    got = cont.student.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in trained.state_dict().items())


def test_stage2_start_errors_are_one_line(tmp_path, cleaner):
    with pytest.raises(ConfigError, match="model.base"):
        Trainer(diffbir_config("s2", model={"base": None}), tmp_path / "a", from_s1=str(cleaner))
    with pytest.raises(ConfigError, match="--from-s1"):
        Trainer(diffbir_config("s2"), tmp_path / "b")
    other = diffir.save_model(diffir.create_model("diffir_sr_x4_s1", dim=8, num_blocks=[1, 1, 1, 1],
                                                  num_refinement_blocks=1, heads=[1, 1, 2, 2], n_encoder_res=1),
                              tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="not a Stable Diffusion checkpoint"):
        Trainer(diffbir_config("s2"), tmp_path / "c", from_s1=f"{cleaner},{other}")
    with pytest.raises(ConfigError, match="give each network once"):
        Trainer(diffbir_config("s2"), tmp_path / "d", from_s1=f"{cleaner},{cleaner}")
    # an SD file whose schedule is zero-terminal-SNR (v2.1's) for an eps preset
    official = diffir.save_model(diffir.create_model("diffbir_tiny_s2"), tmp_path / "pipe", official=True)
    sd = torch.load(official / "sd.ckpt", weights_only=True)
    sd["state_dict"]["alphas_cumprod"] = torch.linspace(1, 0, 1000)
    torch.save(sd, tmp_path / "zsnr.ckpt")
    with pytest.raises(ConfigError, match="zero-terminal-SNR schedule"):
        Trainer(diffbir_config("s2", model={"base": str(tmp_path / "zsnr.ckpt")}), tmp_path / "e",
                from_s1=str(cleaner))
    with pytest.raises(ConfigError, match="needs a patch_size"):
        diffbir_config("s1", data={"train": {"patch_size": None}})
    with pytest.raises(ConfigError, match="noise_aug is for stage s2"):
        diffbir_config("s1", diffusion={"noise_aug": 10})
    with pytest.raises(ConfigError, match="from scratch"):
        Trainer(diffbir_config("s1"), tmp_path / "f", from_s1=str(cleaner))


def test_shipped_tiny_configs_chain_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFIR_DATA", str(shared_data()))
    fast = ["--set", "train.iters=2", "--set", "val.every=2", "--set", "checkpoint.every=2", "--set",
            "data.val.max_images=1", "--set", "log.every=1", "--no-progress"]
    configs = REPO / "configs" / "tiny"
    assert main(["train", "-c", str(configs / "diffbir_s1.yaml"), "--out", str(tmp_path / "s1"), *fast]) == 0
    assert main(["train", "-c", str(configs / "diffbir_s2.yaml"), "--out", str(tmp_path / "s2"), "--from-s1",
                 str(tmp_path / "s1"), *fast]) == 0
    s1, s2 = diffir.load_model(tmp_path / "s1"), diffir.load_model(tmp_path / "s2")
    assert all(torch.equal(v, s2.cleaner.state_dict()[k]) for k, v in s1.cleaner.state_dict().items())
    assert "psnr" in json.loads((tmp_path / "s2" / "val.jsonl").read_text().splitlines()[-1])


def test_stage2_on_batched_realesrgan_pairs_resizes_the_lq_back(tmp_path, cleaner):
    # the v2.1 recipe's data path: Real-ESRGAN x4 pairs (LQ 1/4 of the GT) through the training-pair pool
    train = {"kind": "folder", "degradation": {"name": "realesrgan_x4"}, "pool_size": 4}
    t = Trainer(diffbir_config("s2", data={"train": train}, train={"iters": 3}), tmp_path / "run", from_s1=str(cleaner))
    assert t._next_batch(1)["lq"].shape[-1] == 16
    t._loader = t._make_loader()
    t.pool = t._new_pool()
    t.fit()
    assert len([r for r in records(tmp_path / "run") if np.isfinite(r["loss_diffusion"])]) == 3


@pytest.mark.parametrize("name", ["stage1_swinir", "stage2_v2", "stage2_v2.1"])
def test_official_recipe_configs_parse(name):
    from diffir.train.loading import load_config

    cfg = load_config(REPO / "configs" / "diffbir" / f"{name}.yaml")
    assert cfg.train.seed == 231 and cfg.optim.g.type == "adamw" and cfg.optim.g.betas == (0.9, 0.999)
    if cfg.stage == "s2":
        assert cfg.optim.g.weight_decay == 0.01 and cfg.model.base
        assert cfg.diffusion.noise_aug == (200 if name.endswith("2.1") else 0)
