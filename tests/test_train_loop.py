"""The training loop on real patches from ../shared/data (generated stand-ins without it): S1 → S2 learning,
stage wiring, bit-exact resume, NaN guard rollback, ablation switches.  Tiny networks (dim 8, one block per
level) and 32-px patches."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import diffir
from conftest import shared_data
from diffir.errors import ConfigError
from diffir.train.engine import Trainer, TrainingDiverged
from diffir.train.loading import parse_config

TINY_NET = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 2, 2],
            "n_encoder_res": 1}



def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sr_config(stage: str, **changes):
    data = shared_data()
    base = {
        "name": f"test_{stage}",
        "stage": stage,
        "model": {"preset": f"diffir_sr_x4_s{1 if stage == 's1' else 2}", "overrides": TINY_NET},
        "data": {"train": {"kind": "folder", "gt_dir": str(data / "train" / "T91"), "patch_size": 32,
                           "degradation": {"name": "bicubic_x4"}}},
        "train": {"iters": 6, "batch_size": 4, "ema_decay": 0.9},
        "optim": {"g": {"lr": 2e-3}, "e": {"lr": 2e-3}},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 1000, "keep": 5},
    }
    return parse_config(_merge(base, changes))


def inpaint_config(stage: str, **changes):
    data = shared_data()
    masks = {"irregular": {"max_len": 30, "max_width": 12}, "box": {"margin": 2, "min_size": 6, "max_size": 20}}
    base = {
        "name": f"test_inpaint_{stage}",
        "stage": stage,
        "model": {"preset": f"diffir_inpaint_celeba_s{1 if stage == 's1' else 2}",
                  "overrides": {**TINY_NET, "num_refinement_blocks": 0}},
        "data": {"train": {"kind": "inpaint", "gt_dir": str(data / "inpaint" / "celeba_hq_256"),
                           "patch_size": 32, "mask": masks}},
        "discriminator": {"type": "nlayer", "num_feat": 8, "n_layers": 2},
        "train": {"iters": 6, "batch_size": 2, "ema_decay": 0.0, "grad_clip": 1.0},
        "losses": {"gan": {"type": "nonsaturating", "weight": 10.0, "feature_matching": 100.0,
                           "regenerate_for_d": True}},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "checkpoint": {"every": 1000, "keep": 5},
    }
    return parse_config(_merge(base, changes))


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def random_s1(tmp_path: Path, task: str = "sr") -> Path:
    torch.manual_seed(123)
    if task == "sr":
        m = diffir.create_model("diffir_sr_x4_s1", **TINY_NET)
    else:
        m = diffir.create_model("diffir_inpaint_celeba_s1", **{**TINY_NET, "num_refinement_blocks": 0})
    return diffir.save_model(m, tmp_path / f"s1_{task}.safetensors")


def _mean(xs):
    return sum(xs) / len(xs)


def test_s1_then_s2_learns_and_s2_ipr_approaches_s1(tmp_path):
    s1_out = tmp_path / "s1"
    Trainer(sr_config("s1", train={"iters": 20}), s1_out).fit()
    loss = [r["loss"] for r in records(s1_out)]
    assert _mean(loss[-5:]) < 0.8 * _mean(loss[:5]), loss

    s2 = Trainer(sr_config("s2", train={"iters": 20}), tmp_path / "s2", from_s1=str(s1_out))
    # a fixed probe batch: real T91 patches, bicubic-degraded
    probe = s2._next_batch(1)
    s2._loader = s2._make_loader()
    teacher_ipr = s2.teacher.prior(probe["lq"], probe["gt"])

    def ipr_error() -> float:
        s2.student.eval()
        with torch.no_grad():
            cond = s2.student.condition_of(probe["lq"])
            est = s2.student.sample_prior(cond, generator=torch.Generator().manual_seed(0))
        s2.student.train()
        return (est - teacher_ipr).abs().mean().item()

    before = ipr_error()
    s2.fit()
    after = ipr_error()
    kd = [r["kd_l1"] for r in records(tmp_path / "s2")]
    assert _mean(kd[-5:]) < 0.5 * _mean(kd[:5]), kd
    print("S1 loss", loss, "KD", kd, "IPR error", before, after)
    assert after < 0.5 * before, (before, after)
    # the DIRformer started as the S1 one; the teacher stayed frozen
    s1 = diffir.load_model(s1_out / "model.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(s1.state_dict().values(), s2.teacher.state_dict().values(),
                                                   strict=True))
    final = diffir.load_model(tmp_path / "s2" / "model.safetensors")
    assert final.config.stage == 2 and final.config.dim == 8


def test_from_s1_copies_dirformer_and_checks_shapes(tmp_path):
    s1_path = random_s1(tmp_path)
    t = Trainer(sr_config("s2"), tmp_path / "run", from_s1=str(s1_path))
    s1 = diffir.load_model(s1_path)
    for k, v in s1.G.state_dict().items():
        assert torch.equal(t.student.G.state_dict()[k], v), k
    assert not any(p.requires_grad for p in t.teacher.parameters())
    assert (tmp_path / "run" / "teacher.safetensors").is_file()
    bad = sr_config("s2", model={"overrides": {**TINY_NET, "dim": 16}})
    with pytest.raises(ConfigError, match="dim=8 but the configured model has dim=16"):
        Trainer(bad, tmp_path / "bad", from_s1=str(s1_path))
    with pytest.raises(ConfigError, match="--from-s1"):
        Trainer(sr_config("s2"), tmp_path / "none")


def test_init_fine_tunes_from_weights_of_the_same_stage(tmp_path):
    s1_path = random_s1(tmp_path)
    t = Trainer(sr_config("s1", model={"init": str(s1_path)}), tmp_path / "run")
    source = diffir.load_model(s1_path).state_dict()
    assert all(torch.equal(v, source[k]) for k, v in t.student.state_dict().items())
    assert any(not torch.equal(v, source[k]) for k, v in Trainer(sr_config("s1"), tmp_path / "fresh")
               .student.state_dict().items())  # without init: the seeded fresh weights
    with pytest.raises(ConfigError, match="dim=8 but the configured model has dim=16"):
        Trainer(sr_config("s1", model={"init": str(s1_path), "overrides": {**TINY_NET, "dim": 16}}),
                tmp_path / "bad")
    home = tmp_path / "home"
    home.mkdir()
    (home / "s1.safetensors").write_bytes(s1_path.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        t = Trainer(sr_config("s1", model={"init": "~/s1.safetensors"}), tmp_path / "tilde")
    assert all(torch.equal(v, source[k]) for k, v in t.student.state_dict().items())
    with pytest.raises(ConfigError, match="a stage-1 model cannot start stage 2"):
        Trainer(sr_config("s2", model={"init": str(s1_path)}), tmp_path / "s2", from_s1=str(s1_path))


def crash_and_resume(make, tmp_path: Path) -> tuple[Path, Path]:
    """Run 6 iterations uninterrupted (``a``) and crashed at 5 then resumed from the checkpoint at 3 (``b``).

    ``make(out, **kw)`` builds the Trainer (checkpoints every 3 iterations); returns both runs' iteration-6
    checkpoint folders.
    """
    make(tmp_path / "a").fit()
    crashed = make(tmp_path / "b")
    real = crashed.train_iteration

    def crashing(it: int):
        if it == 5:
            raise RuntimeError("simulated crash")
        return real(it)

    crashed.train_iteration = crashing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    resumed = make(tmp_path / "b", resume="auto")
    assert resumed.start_iter == 3
    resumed.fit()
    return tuple(tmp_path / run / "checkpoints" / "iter_00000006" for run in ("a", "b"))  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["sr_s2_warmup_workers", "inpaint_s1_gan", "sr_s1_pair_pool"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, kind):
    if kind == "sr_s1_pair_pool":  # Real-ESRGAN's training-pair pool is part of the resumable state
        cfg = sr_config("s1", data={"train": {"pool_size": 8}}, checkpoint={"every": 3})
        make = lambda out, **kw: Trainer(cfg, out, **kw)  # noqa: E731
    elif kind == "sr_s2_warmup_workers":
        s1 = str(random_s1(tmp_path))
        cfg = sr_config("s2", train={"iters": 6, "encoder_iters": 2},
                        data={"train": {"num_workers": 2}}, checkpoint={"every": 3})
        make = lambda out, **kw: Trainer(cfg, out, from_s1=s1, **kw)  # noqa: E731
    else:
        cfg = inpaint_config("s1", checkpoint={"every": 3})
        make = lambda out, **kw: Trainer(cfg, out, **kw)  # noqa: E731

    a, b = crash_and_resume(make, tmp_path)
    for f in sorted(p.name for p in a.glob("*.safetensors")):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (f, k)
    sa = torch.load(a / "state.pt", weights_only=True)
    sb = torch.load(b / "state.pt", weights_only=True)
    for name, opt in sa["optimizers"].items():
        for pid, st in opt["state"].items():
            for k, v in st.items():
                assert torch.equal(v, sb["optimizers"][name]["state"][pid][k]), (name, pid, k)
    last_a = [r for r in records(tmp_path / "a") if r.get("iter") == 6][-1]
    last_b = [r for r in records(tmp_path / "b") if r.get("iter") == 6][-1]
    assert {k: v for k, v in last_a.items() if k not in ("it_s", "eta_s")} == {
        k: v for k, v in last_b.items() if k not in ("it_s", "eta_s")}


def test_pair_pool_swaps_in_past_pairs(tmp_path):
    t = Trainer(sr_config("s1", data={"train": {"pool_size": 8}}), tmp_path / "run")
    b1, b2, b3 = (t._next_batch(i) for i in (1, 2, 3))  # two batches fill the pool and pass through
    assert t.pool.filled == 8
    past_gt, past_lq = torch.cat([b1["gt"], b2["gt"]]), torch.cat([b1["lq"], b2["lq"]])
    for gt, lq in zip(b3["gt"], b3["lq"], strict=True):  # the third batch: past pairs, still aligned
        (idx,) = [k for k in range(8) if torch.equal(past_gt[k], gt)]
        assert torch.equal(past_lq[idx], lq)
    with pytest.raises(ConfigError, match="pool_size 6 must be a multiple of train.batch_size 4"):
        sr_config("s1", data={"train": {"pool_size": 6}})


def test_nan_guard_rolls_back_to_last_checkpoint(tmp_path):
    cfg = sr_config("s1", train={"iters": 6}, checkpoint={"every": 2})
    t = Trainer(cfg, tmp_path / "run")
    real, calls = t._g_losses, {"n": 0}

    def poisoned(batch, warmup):
        calls["n"] += 1
        loss, logs, out = real(batch, warmup)
        return (loss * float("nan") if calls["n"] == 5 else loss), logs, out

    t._g_losses = poisoned  # type: ignore[method-assign]
    summary = t.fit()
    assert summary["iter"] == 6
    events = [r for r in records(tmp_path / "run") if r.get("event") == "rollback"]
    assert events == [{"event": "rollback", "iter": 5, "to": 4, "rollbacks": 1}]
    state = torch.load(tmp_path / "run" / "checkpoints" / "iter_00000006" / "state.pt", weights_only=True)
    assert state["rollbacks"] == 1
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "run" / "model.safetensors")).values())

    early = Trainer(sr_config("s1", train={"iters": 3}), tmp_path / "early")
    early._g_losses = lambda b, w: (torch.tensor(float("nan"), requires_grad=True), {}, None)  # type: ignore[method-assign]
    with pytest.raises(TrainingDiverged, match="before any checkpoint"):
        early.fit()


@pytest.mark.parametrize(
    ("changes", "switch_off"),
    [
        ({"diffusion": {"enabled": False}}, {"diffusion": {"enabled": True}}),  # V1
        ({"diffusion": {"optimization": "traditional"}}, {"diffusion": {"optimization": "joint"}}),  # V2
        ({"diffusion": {"reverse_noise": True}, "losses": {"kd": {"type": "kl"}}},
         {"diffusion": {"reverse_noise": False}}),  # V4, Tab. 5 KL
        ({"diffusion": {"timesteps": 3}, "train": {"accum_steps": 2}, "losses": {"kd": {"type": "l2"}}},
         {"diffusion": {"timesteps": None}}),
    ],
    ids=["v1_no_diffusion", "v2_traditional", "v4_reverse_noise_kl", "t3_accum2_l2"],
)
def test_ablation_switches_train(tmp_path, changes, switch_off):
    s1 = str(random_s1(tmp_path))
    cfg = sr_config("s2", **_merge({"train": {"iters": 2}}, changes))
    t = Trainer(cfg, tmp_path / "run", from_s1=s1)
    denoise_before = {k: v.clone() for k, v in t.student.denoise.state_dict().items()}
    g_before = {k: v.clone() for k, v in t.student.G.state_dict().items()}
    t.fit()
    recs = [r for r in records(tmp_path / "run") if "loss" in r]
    assert len(recs) == 2 and all(r["loss"] == r["loss"] for r in recs)
    denoise_moved = any(not torch.equal(v, t.student.denoise.state_dict()[k]) for k, v in denoise_before.items())
    assert denoise_moved == cfg.diffusion.enabled  # V1 bypasses the denoiser entirely
    assert any(not torch.equal(v, t.student.G.state_dict()[k]) for k, v in g_before.items())
    assert t.student.diffusion.timesteps == (cfg.diffusion.timesteps or 4)
    # V1 and V4 change inference too: the saved model must restore as it was trained, not as V3.
    saved = diffir.load_model(tmp_path / "run" / "model.safetensors")
    assert (saved.config.prior_diffusion, saved.config.reverse_noise) == (cfg.diffusion.enabled,
                                                                         cfg.diffusion.reverse_noise)
    cond = saved.condition_of(torch.rand(1, 3, 16, 16))
    assert torch.equal(saved.sample_prior(cond), cond) == (not cfg.diffusion.enabled)

    # The switch must change the training step: the first iteration (same seed, same data) gives another loss
    # with the switch alone turned back off, and exactly the logged one with it on.
    def first_loss(config, name: str) -> float:
        return Trainer(config, tmp_path / name, from_s1=s1).train_iteration(1)["loss"]

    assert first_loss(cfg, "again") == recs[0]["loss"]
    assert first_loss(sr_config("s2", **_merge(_merge({"train": {"iters": 2}}, changes), switch_off)),
                      "off") != recs[0]["loss"]


def test_s2_warmup_trains_only_cpen_s2_and_denoiser(tmp_path):
    s1 = str(random_s1(tmp_path))
    cfg = sr_config("s2", train={"iters": 2, "encoder_iters": 2})
    t = Trainer(cfg, tmp_path / "run", from_s1=s1)
    g_before = {k: v.clone() for k, v in t.student.G.state_dict().items()}
    cond_before = {k: v.clone() for k, v in t.student.condition.state_dict().items()}
    t.fit()
    assert all(torch.equal(v, t.student.G.state_dict()[k]) for k, v in g_before.items())
    assert any(not torch.equal(v, t.student.condition.state_dict()[k]) for k, v in cond_before.items())
    assert all("loss_pix" not in r for r in records(tmp_path / "run"))


def test_guard_ignores_the_scale_change_after_the_warmup(tmp_path):
    # KD-only warm-up losses are ~100x smaller than L1 + KD afterwards; a short window would flag a "spike".
    s1 = str(random_s1(tmp_path))
    cfg = sr_config("s2", train={"iters": 5, "encoder_iters": 3}, guard={"window": 2, "spike_factor": 1.5},
                    checkpoint={"every": 1})
    Trainer(cfg, tmp_path / "run", from_s1=s1).fit()
    assert not [r for r in records(tmp_path / "run") if r.get("event") == "rollback"]


def test_amp_bf16_trains_on_the_cpu_and_fp16_is_refused(tmp_path, monkeypatch):
    """train.amp is not ignored on the CPU: bf16 runs the forward passes in bf16 (other weights than float32 after
    the same steps), and fp16, whose gradient scaler is CUDA-only, is refused with the key named."""
    dtypes = []
    original = Trainer._autocast

    def spy(self):
        dtypes.append(self.amp_dtype)
        return original(self)

    monkeypatch.setattr(Trainer, "_autocast", spy)
    weights = {}
    for amp in ("none", "bf16"):
        t = Trainer(sr_config("s1", train={"iters": 2, "amp": amp}), tmp_path / amp)
        t.fit()
        weights[amp] = t.student.state_dict()
    assert torch.bfloat16 in dtypes and None in dtypes
    assert any(not torch.equal(v, weights["bf16"][k]) for k, v in weights["none"].items())
    with pytest.raises(ConfigError, match=r"train.amp.*fp16 needs a CUDA device.*use bf16"):
        Trainer(sr_config("s1", train={"amp": "fp16"}), tmp_path / "fp16")


def test_inpainting_validation_scores_the_holes_too(tmp_path):
    """val.jsonl of an inpainting run carries psnr_hole (the bar's metric, as diffir eval computes it); with the
    known pixels kept, the holes hold all the error, so it lies under the whole-image PSNR."""
    faces = str(shared_data() / "inpaint" / "celeba_hq_256")
    val = {"kind": "inpaint", "gt_dir": faces, "max_images": 2, "patch_size": None, "augment": False,
           "mask": {"preset": "thick_256"}}
    out = tmp_path / "run"
    Trainer(inpaint_config("s1", data={"val": val}, train={"iters": 2}, val={"every": 2}), out).fit()
    (record,) = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert 0 < record["psnr_hole"] < record["psnr"], record
