"""``diffir train`` on bad input: one line (exit 2) naming the config file / key and the fix, before any training;
no code run from a weights file; a full disk keeps the previous checkpoint; umask permissions; stale temporaries
removed; a resumed run's logs read as one run; training validation pads like ``diffir restore``."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import diffir
from conftest import REPO, shared_data
from diffir.cli import main
from diffir.errors import ConfigError
from diffir.train import checkpointing as ckpt
from diffir.train.loading import load_config

CONFIG = REPO / "configs" / "tiny" / "sr_x4_s1.yaml"
FAST = ["--set", "data.train.patch_size=32", "--set", "val.every=0", "--set", "log.every=1",
        "--set", "log.tensorboard=false", "--no-progress"]


@pytest.fixture(autouse=True)
def data_env(monkeypatch):
    monkeypatch.setenv("DIFFIR_DATA", str(shared_data()))


def _error(capsys, *argv: str, out: Path) -> str:
    """Run ``diffir train``; it must fail with exit 2, one line, and leave no run folder."""
    assert main(["train", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("diffir: error: "), err
    assert not out.exists()
    return err.removeprefix("diffir: error: ")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.train.patch_size=0", "--set data.train.patch_size: Input should be greater than 0"),
        ("data.train.patch_size=-8", "--set data.train.patch_size: Input should be greater than 0"),
        ("data.train.patch_size=4", "--set data.train.patch_size: 4 must be a positive multiple of 32 (the scale 4 "
         "× the size multiple 8 of diffir_sr_x4_s1), e.g. 32"),
        ("data.train.patch_size=30", "--set data.train.patch_size: 30 must be a positive multiple of 32"),
        ("optim.g.lr=-1", "--set optim.g.lr: Input should be greater than 0"),
        ("optim.g.lr=.nan", "--set optim.g.lr: Input should be a finite number"),
        ("train.grad_clip=-1", "--set train.grad_clip: -1.0 is negative; use a positive max gradient norm, or null "
         "for no clipping"),
        ("data.train.num_workers=-1", "--set data.train.num_workers: Input should be greater than or equal to 0"),
        ("guard.window=0", "--set guard.window: Input should be greater than or equal to 1"),
        ("data.train.degradation.name=bicubic_x2", "--set data.train.degradation.name: bicubic_x2 makes ×2 pairs "
         "but diffir_sr_x4_s1 is a ×4 model; use bicubic_x4 (or a ×2 preset)"),
        ("train.device=tpu", "--set train.device: unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
        ("train.batch_size=100000", "--set train.batch_size: 100000 is more than 1024 images per process: such a "
         "batch does not fit in memory"),
        (f"train.iters={10**23}", "--set train.iters: Input should be less than or equal to 1000000000"),
        ("train.iters=2.5", "--set train.iters: Input should be a valid integer"),
        ("model.overrides.dim=-8", "--set model.overrides.dim: "),
        ("train.iters=[1", "--set train.iters: not valid YAML: expected ',' or ']'"),
        ("train.iters=!!python/object/apply:os.system [ls]", "--set train.iters: YAML tag "
         "!!python/object/apply:os.system is not allowed"),
        ("name=../../elsewhere", "--set name: '../../elsewhere' is not usable as a run folder name (runs/<name>)"),
        ("data.val.filename_tmpl='{}{}'", "--set data.val.filename_tmpl: '{}{}' must contain one '{}' for the GT "
         "file stem"),
        ("data.train.degradation.options={foo: 1}", "--set data.train.degradation.options: bad options for "
         "degradation 'bicubic_x4'"),
    ],
)
def test_bad_setting_is_one_line_before_training(tmp_path, capsys, setting, message):
    err = _error(capsys, "-c", str(CONFIG), "--set", setting, out=tmp_path / "run")
    assert err.startswith(message), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_the_fix(tmp_path, capsys):
    err = _error(capsys, "-c", str(CONFIG), "--set", "train.device=cuda", out=tmp_path / "run")
    assert err == "--set train.device: CUDA is not available on this machine; use device: cpu or auto"


def _config_with(tmp_path: Path, old: str, new: str) -> Path:
    text = CONFIG.read_text()
    assert old in text
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text.replace(old, new))
    return cfg


def test_bad_model_override_in_the_file_names_file_and_key(tmp_path, capsys):
    cfg = _config_with(tmp_path, "overrides: {dim: 8,", "overrides: {dim: -8,")
    err = _error(capsys, "-c", str(cfg), out=tmp_path / "run")
    assert err.startswith(f"{cfg}: model.overrides: "), err
    cfg = _config_with(tmp_path, "overrides: {dim: 8,", "overrides: {dimm: 8,")
    assert _error(capsys, "-c", str(cfg), out=tmp_path / "run") == (
        f"{cfg}: model.overrides: unknown model config key 'dimm'; did you mean 'dim'?")


def test_python_tag_in_the_config_file_is_refused_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = _config_with(tmp_path, "name: tiny_sr_x4_s1", f"name: !!python/object/apply:os.system ['touch {marker}']")
    err = _error(capsys, "-c", str(cfg), out=tmp_path / "run")
    assert err.startswith(f"{cfg}: YAML tag !!python/object/apply:os.system is not allowed (line "), err
    assert not marker.exists()


def test_binary_config_files(tmp_path, capsys):
    png = REPO / "src" / "diffir" / "assets" / "calibration.png"
    noise = tmp_path / "noise.yaml"
    noise.write_bytes(os.urandom(4096))
    for path in (png, noise):
        assert _error(capsys, "-c", str(path), out=tmp_path / "run") == (
            f"{path}: not a text (UTF-8) YAML file; -c expects a training config such as configs/tiny/sr_x4_s1.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    assert "too large for a training config" in _error(capsys, "-c", str(big), out=tmp_path / "run")


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 12):  # 9**12 strings once expanded
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=f"^{bomb}: the YAML expands to more than 100000 values"):
        load_config(bomb)
    assert time.perf_counter() - t0 < 2
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [*a]\n")
    with pytest.raises(ConfigError, match="a YAML alias refers to itself"):
        load_config(loop)


def _evil_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for protocol in (2, 4):
        with open(path.with_suffix(f".{protocol}.pth"), "wb") as fh:
            pickle.dump({"features.0.weight": Evil()}, fh, protocol=protocol)


def test_vgg_weights_pickle_is_refused_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    _evil_pickle(tmp_path / "vgg", marker)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(random.Random(0).randbytes(2048))
    fix = "point losses.perceptual.vgg_weights at torchvision's ImageNet VGG19 weights (.pth or .safetensors)"
    for weights in (tmp_path / "vgg.2.pth", tmp_path / "vgg.4.pth", garbage):
        err = _error(capsys, "-c", str(CONFIG), "--set", "losses.perceptual.weight=1", "--set",
                     f"losses.perceptual.vgg_weights={weights}", out=tmp_path / "run")
        assert err.startswith(f"{weights}: ") and err.endswith(fix), err
        if weights != garbage:  # random bytes fail in the unpickler in one way or another
            assert err.startswith(f"{weights}: refused: not a plain tensors file ("), err
    assert not marker.exists()
    damaged = tmp_path / "vgg.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    err = _error(capsys, "-c", str(CONFIG), "--set", "losses.perceptual.weight=1", "--set",
                 f"losses.perceptual.vgg_weights={damaged}", out=tmp_path / "run")
    assert err.startswith(f"{damaged}: not a readable weights file (") and err.endswith(fix), err


def _train(out: Path, iters: int, *extra: str) -> int:
    return main(["train", "-c", str(CONFIG), "--out", str(out), "--set", f"train.iters={iters}",
                 "--set", "checkpoint.every=2", *FAST, *extra])


def test_full_disk_while_checkpointing_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = ckpt.save_weights

    def full_disk(module, path):
        if "iter_00000004" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(module, path)

    monkeypatch.setattr(ckpt, "save_weights", full_disk)
    assert _train(out, 4) == 2
    err = capsys.readouterr().err.strip()
    root = out / "checkpoints"
    assert err.count("\n") == 0 and err == (
        f"diffir: error: cannot write checkpoint {root / 'iter_00000004'}: no space left on device; free some space "
        f"or write elsewhere; the previous checkpoint {root / 'iter_00000002'} is kept"), err
    assert sorted(p.name for p in root.iterdir()) == ["iter_00000002"]  # no half-made directory
    diffir.load_model(root / "iter_00000002" / "params.safetensors")
    assert torch.load(root / "iter_00000002" / "state.pt", weights_only=True)["iteration"] == 2


def test_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        ckpt.save_checkpoint(tmp_path, 1, {"net_d": nn.Linear(2, 2), "params": diffir.create_model(
            "diffir_sr_x4_s1", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2],
            n_encoder_res=1)}, {"iteration": 1}, keep=2, tensors={"pair_pool": {"lq": torch.zeros(2)}})
    finally:
        os.umask(old)
    files = list((tmp_path / "checkpoints" / "iter_00000001").iterdir())
    assert {f.name for f in files} == {"net_d.safetensors", "params.safetensors", "pair_pool.safetensors", "state.pt"}
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {"0o644"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_start_removes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 2) == 0
    root = out / "checkpoints"
    dead = _dead_pid()
    leftovers = [out / f".model.safetensors.{dead}-0123abcd.tmp.safetensors",
                 root / f".tmp_iter_00000004_{dead}", root / f".config.yaml.{dead}-89abcdef.tmp.yaml"]
    leftovers[0].write_bytes(b"half")
    leftovers[1].mkdir()
    (leftovers[1] / "params.safetensors").write_bytes(b"half")
    leftovers[2].write_text("half")
    live = root / f".tmp_iter_00000006_{os.getpid()}"  # a writer that is still running: not touched
    live.mkdir()
    assert _train(out, 3, "--resume", "auto") == 0
    assert not any(p.exists() for p in leftovers)
    assert live.is_dir()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["iter_00000002", "iter_00000003"]


def test_resumed_run_logs_each_iteration_once(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 2, "--set", "val.every=2") == 0
    # an interrupted run logged iterations 3 and 4 (and half a line) after its last checkpoint (2)
    for name, extra in (("log.jsonl", {"loss": 9.0}), ("val.jsonl", {"psnr": 1.0})):
        with open(out / name, "a") as fh:
            fh.write(json.dumps({"iter": 3, **extra}) + "\n" + json.dumps({"iter": 4, **extra}) + "\n{\"iter\": 5, ")
    assert _train(out, 4, "--set", "val.every=2", "--resume", "auto") == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2, 3, 4] and 9.0 not in [r["loss"] for r in log]
    val = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in val] == [2, 4] and 1.0 not in [r["psnr"] for r in val]


def test_training_resolves_devices_like_restore(monkeypatch):
    from diffir.pipelines import precision
    from diffir.train.distributed import DistContext
    from diffir.train.engine import _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "_mps_available", lambda: True)
    assert _device("auto", DistContext()) == torch.device("mps")  # the old resolver ignored MPS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    rank1 = DistContext(rank=1, world_size=2, local_rank=1, local_world_size=2)
    assert _device("auto", rank1) == torch.device("cuda", 1)  # each process its own GPU
    assert _device("cuda", rank1) == torch.device("cuda", 1)


@pytest.mark.parametrize("size", [(13, 11), (3, 5), (16, 24)])
def test_training_validation_equals_the_restore_pipeline(size):
    from diffir.train.validation import restore_image

    torch.manual_seed(0)
    model = diffir.create_model("diffir_sr_x4_s2", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                                heads=[1, 1, 2, 2], n_encoder_res=1).eval()
    lq = torch.rand(1, 3, *size)
    gt = torch.rand(1, 3, size[0] * 4, size[1] * 4)
    with torch.no_grad():
        ours = restore_image(model, {"lq": lq, "gt": gt}, "s2", seed=3)
    theirs = diffir.Restorer(model, tile=0, precision="fp32", device="cpu", seed=3).restore_float(lq)
    assert ours.shape == theirs.shape == (1, 3, size[0] * 4, size[1] * 4)
    assert torch.equal(ours, theirs)


def test_model_file_written_by_training_loads(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 1) == 0
    for f in (out / "model.safetensors", out / "config.yaml"):
        assert oct(stat.S_IMODE(f.stat().st_mode)) == oct(0o666 & ~_umask())
    assert load_file(str(out / "model.safetensors"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_resume_with_another_network_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, 2) == 0
    capsys.readouterr()
    assert _train(out, 4, "--resume", "auto", "--set", "model.overrides.dim=16") == 2
    err = capsys.readouterr().err.strip()
    params = out / "checkpoints" / "iter_00000002" / "params.safetensors"
    assert err.count("\n") == 0 and err.startswith(f"diffir: error: {params}: cannot load (RuntimeError: "), err
    assert err.endswith("the checkpoint is damaged or from a different config"), err
