"""``diffir train`` end to end with the shipped tiny configs: SR S1 → S2 → GAN, inpainting S1 → S2, errors,
``kill -9`` + ``--resume auto``, and 2-process ``torchrun`` (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import diffir
from conftest import REPO, shared_data
from diffir.cli import main

CONFIGS = REPO / "configs" / "tiny"
# Shrink the shipped tiny configs further: the recipe is exercised, not the convergence.
FAST = ["--set", "data.train.patch_size=32", "--set", "data.val.max_images=1", "--set", "log.progress=false",
        "--set", "log.every=1", "--no-progress"]


@pytest.fixture
def data_env(monkeypatch):
    monkeypatch.setenv("DIFFIR_DATA", str(shared_data()))  # generated stand-in without the shared folder



def _train(config: str, out: Path, *extra: str, iters: int = 3) -> int:
    return main(["train", "-c", str(CONFIGS / config), "--out", str(out), "--set", f"train.iters={iters}",
                 "--set", f"val.every={iters}", "--set", f"checkpoint.every={iters}", *FAST, *extra])


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_sr_s1_s2_gan_chain(tmp_path, data_env):
    s1, s2, gan = tmp_path / "s1", tmp_path / "s2", tmp_path / "gan"
    assert _train("sr_x4_s1.yaml", s1) == 0
    assert _train("sr_x4_s2.yaml", s2, "--from-s1", str(s1), "--set", "train.encoder_iters=1") == 0
    assert _train("sr_x4_gan.yaml", gan, "--from-s2", str(s2)) == 0
    for run, stage in [(s1, 1), (s2, 2), (gan, 2)]:
        model = diffir.load_model(run / "model.safetensors")
        assert model.config.stage == stage
        assert json.loads((run / "val.jsonl").read_text().splitlines()[-1])["psnr"] > 10
        assert [r["iter"] for r in _log(run)] == [1, 2, 3]
        ck = run / "checkpoints" / "iter_00000003"
        diffir.load_model(ck / "params.safetensors")
        diffir.load_model(ck / "params_ema.safetensors")
    assert (gan / "checkpoints" / "iter_00000003" / "net_d.safetensors").is_file()
    assert {"loss_gan", "d_real", "d_fake", "loss_kd", "loss_pix", "lr", "lr_d", "it_s"} <= set(_log(gan)[-1])
    # the GAN stage starts from the S2 EMA weights and reuses the S2 teacher
    s2_model = diffir.load_model(s2 / "model.safetensors")
    teacher = diffir.load_model(gan / "teacher.safetensors")
    assert teacher.config.stage == 1 and s2_model.config == teacher.config.replace(stage=2)


def test_inpaint_s1_s2_chain(tmp_path, data_env):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert _train("inpaint_s1.yaml", s1) == 0
    assert _train("inpaint_s2.yaml", s2, "--from-s1", str(s1)) == 0
    last = _log(s2)[-1]
    assert {"loss_pix", "loss_gan", "loss_fm", "loss_kd", "d_real", "d_fake", "r1"} <= set(last)
    assert diffir.load_model(s2 / "model.safetensors").config.task == "inpaint"


def test_deblur_s1_s2_chain(tmp_path, data_env):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert _train("deblur_s1.yaml", s1) == 0
    assert _train("deblur_s2.yaml", s2, "--from-s1", str(s1), "--set", "train.encoder_iters=1") == 0
    model = diffir.load_model(s2 / "model.safetensors")
    assert (model.config.task, model.config.stage) == ("deblur", 2)
    assert json.loads((s2 / "val.jsonl").read_text().splitlines()[-1])["psnr"] > 10
    assert "loss_kd" in _log(s2)[-1]


def test_hidiff_s1_s2_chain_then_restore_real_blur_pairs(tmp_path, data_env):
    from PIL import Image

    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    assert _train("hidiff_s1.yaml", s1, iters=20) == 0
    first, last = _log(s1)[0]["loss_pix"], _log(s1)[-1]["loss_pix"]
    assert last < 0.8 * first, (first, last)  # L1 on real motion-blurred photos goes down
    # stage 2 starts from the stage-1 weights in the official per-network layout (as the authors release them)
    official_s1 = tmp_path / "HI_Diff_S1"
    assert main(["convert", str(s1), str(official_s1)]) == 0
    assert sorted(p.name for p in official_s1.iterdir()) == ["net_g.pth", "net_le.pth"]
    assert _train("hidiff_s2.yaml", s2, "--from-s1", str(official_s1), iters=4) == 0
    model = diffir.load_model(s2)
    assert (model.descriptor.architecture, model.descriptor.stage) == ("hidiff", 2)
    assert diffir.load_model(s2 / "teacher.safetensors").descriptor.stage == 1  # LE, frozen
    assert "loss_kd" in _log(s2)[-1]  # L1(teacher prior, sampled prior) next to the pixel loss
    crops = tmp_path / "blurry"
    crops.mkdir()
    pairs = sorted((shared_data("deblur", "real_pairs", "blur")).glob("*.png"))
    for path in pairs:  # 100×76 crops (not multiples of 8): padding and cropping back are exercised
        Image.open(path).convert("RGB").crop((200, 200, 300, 276)).save(crops / path.name)
    assert main(["restore", "-m", str(s2), "-i", str(crops), "-o", str(tmp_path / "sharp"), "-q"]) == 0
    outs = sorted((tmp_path / "sharp").glob("*_out.png"))
    assert len(outs) == len(pairs) == 4
    for out, path in zip(outs, pairs, strict=True):
        restored, blurry = Image.open(out), Image.open(crops / path.name)
        assert restored.size == blurry.size and restored.tobytes() != blurry.tobytes()


def test_cli_errors_are_one_line(tmp_path, data_env, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "sr_x4_s1.yaml").read_text().replace("batch_size:", "batchsize:"))
    assert main(["train", "-c", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'train.batchsize'; did you mean 'train.batch_size'?" in err
    assert main(["train", "-c", str(CONFIGS / "sr_x4_s2.yaml"), "--out", str(tmp_path / "y")]) == 2
    assert "--from-s1" in capsys.readouterr().err
    assert _train("sr_x4_s1.yaml", tmp_path / "z", iters=1) == 0
    assert _train("sr_x4_s1.yaml", tmp_path / "z", iters=1) == 2  # would overwrite: asks for --resume
    assert "--resume auto" in capsys.readouterr().err
    missing_vgg = ["--set", "losses.perceptual.weight=1", "--set", f"losses.perceptual.vgg_weights={tmp_path}/v.pth"]
    # z is a stage-1 run passed as the stage-2 model: that is said first (not "no S1 teacher found"), and
    # following it by adding --from-s1 gives the same answer rather than a new complaint
    z = tmp_path / "z"
    for extra in ([], ["--from-s1", str(z)]):
        assert _train("sr_x4_gan.yaml", tmp_path / "g", "--from-s2", str(z), *extra) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"diffir: error: --from-s2 {z}: that is a stage-1 model, not a stage-2 model; "
                       f"train stage s2 first (--from-s1 {z}) and pass that run as --from-s2"), err
    assert _train("sr_x4_s2.yaml", tmp_path / "g", "--from-s2", str(z)) == 2
    assert capsys.readouterr().err.strip().endswith("that is a stage-1 model, not a stage-2 model; "
                                                    "pass it as --from-s1 instead")
    assert _train("sr_x4_s1.yaml", tmp_path / "g", *missing_vgg) == 2
    assert "VGG19 weights not found" in capsys.readouterr().err


def test_missing_dataset_folder_names_the_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFIR_DATA", str(tmp_path / "nope"))
    assert _train("sr_x4_s1.yaml", tmp_path / "run", iters=1) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"diffir: error: image folder not found: {tmp_path}/nope/train/T91 (no such folder; "
                   f"DIFFIR_DATA is {tmp_path}/nope: point it at the folder that holds train/T91, or edit "
                   f"data.train.gt_dir in {CONFIGS / 'sr_x4_s1.yaml'}; what it holds and where to get the public sets: "
                   "docs/data.md)")


def test_without_train_extra_one_line_not_a_traceback(tmp_path):
    """pydantic missing (no ``[train]`` extra): one line naming the install command, exit code 2."""
    code = ("import sys; sys.modules['pydantic'] = None\n"  # what a failed `import pydantic` looks like
            "from diffir.cli import main\n"
            f"sys.exit(main(['train', '-c', {str(CONFIGS / 'sr_x4_s1.yaml')!r}, '--out', {str(tmp_path / 'r')!r}]))")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("diffir: error: diffir train needs the training extras: pip install "
                           "'diffir-toolkit[train]' (in a checkout: pip install -e '.[train]') (pydantic is missing)\n")
    assert not (tmp_path / "r").exists()


def test_missing_tensorboard_warns_and_trains(tmp_path, data_env, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # tensorboard not installed
    assert _train("sr_x4_s1.yaml", tmp_path / "run", "--set", "log.tensorboard=true", iters=1) == 0
    err = capsys.readouterr().err
    assert err.count("tensorboard is not installed (pip install 'diffir-toolkit[train]'") == 1
    assert not (tmp_path / "run" / "tb").exists() and (tmp_path / "run" / "log.jsonl").is_file()


@pytest.mark.parametrize("flag", ["-q", "--quiet", "--no-progress"])
def test_quiet_is_an_alias_of_no_progress(flag):
    from diffir.cli import build_parser

    args = build_parser().parse_args(["train", "-c", "x.yaml", flag])
    assert args.no_progress is True
    assert build_parser().parse_args(["train", "-c", "x.yaml"]).no_progress is False


def test_quiet_run_prints_no_progress_bar(tmp_path, data_env, capsys):
    def run(out: str, *flag: str) -> str:
        assert main(["train", "-c", str(CONFIGS / "sr_x4_s1.yaml"), "--out", str(tmp_path / out),
                     "--set", "train.iters=2", "--set", "val.every=0", "--set", "data.train.patch_size=32",
                     "--set", "log.progress=true", *flag]) == 0
        return capsys.readouterr().err

    assert "2/2" in run("bar")  # the progress bar, on stderr
    err = run("quiet", "-q")
    assert "2/2" not in err and "done at iteration 2" in err


def _env() -> dict[str, str]:
    env = dict(os.environ, DIFFIR_DATA=str(shared_data()), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_kill_9_then_resume_auto_loses_nothing(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "diffir", "train", "-c", str(CONFIGS / "sr_x4_s1.yaml"), "--out", str(out),
           "--set", "train.iters=40", "--set", "checkpoint.every=2", "--set", "val.every=0", *FAST]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "iter_00000004").is_dir():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run([*cmd, "--resume", "auto", "--set", "train.iters=8"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    iters = [r["iter"] for r in _log(out) if "loss" in r]
    assert iters == list(range(1, 9))  # the iterations redone after the checkpoint are logged once
    assert not list((out / "checkpoints").glob(".tmp_*"))
    # ... and the weights equal those of an uninterrupted 8-iteration run, bit for bit
    ref = tmp_path / "ref"
    cmd_ref = [*cmd[: cmd.index("--out") + 1], str(ref), *cmd[cmd.index("--out") + 2 :], "--set", "train.iters=8"]
    assert subprocess.run(cmd_ref, env=_env(), capture_output=True, timeout=300).returncode == 0
    for name in ("model.safetensors", "checkpoints/iter_00000008/params.safetensors"):
        got, want = load_file(str(out / name)), load_file(str(ref / name))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got), name


def test_torchrun_two_processes_gloo(tmp_path, data_env):
    def train_args(out: Path, batch: int) -> list[str]:
        return ["train", "-c", str(CONFIGS / "sr_x4_s1.yaml"), "--out", str(out), "--set", "train.iters=3",
                "--set", f"train.batch_size={batch}", "--set", "val.every=3", "--set", "checkpoint.every=3", *FAST]

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "diffir",
           *train_args(out, 2)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["iter"] for r in _log(out)] == [1, 2, 3]  # rank 0 logs once per step
    state = torch.load(out / "checkpoints" / "iter_00000003" / "state.pt", weights_only=True)
    assert state["world_size"] == 2
    ddp = diffir.load_model(out / "model.safetensors")
    # Two processes x batch 2 see exactly the samples of one process x batch 4 (interleaved stream; S1 with
    # bicubic has no other randomness) and average their gradients: the same training up to summation order.
    assert main(train_args(tmp_path / "single", 4)) == 0
    ref = diffir.load_model(tmp_path / "single" / "model.safetensors")
    for (k, a), b in zip(ddp.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), k


def test_progressive_patch_and_batch_schedule_runs(tmp_path, data_env, monkeypatch):
    """Deblur-style progressive training: the engine cuts each batch to the stage's size and window."""
    import diffir.train.engine as engine

    seen: list[tuple[int, int, int]] = []
    real_cut = engine.cut_batch

    def spy(batch, size, patch, generator, scales):
        out = real_cut(batch, size, patch, generator, scales=scales)
        seen.append((out["gt"].shape[0], out["gt"].shape[-1], out["lq"].shape[-1]))
        return out

    monkeypatch.setattr(engine, "cut_batch", spy)
    schedule = "train.progressive={iters: [2, 2], batch_sizes: [4, 2], patch_sizes: [32, 64]}"
    args = ("--set", schedule, "--set", "data.train.patch_size=64")
    assert _train("sr_x4_s1.yaml", tmp_path / "prog", *args, iters=4) == 0
    assert seen == [(4, 32, 8), (4, 32, 8), (2, 64, 16), (2, 64, 16)], seen
