"""Bad checkpoints, bad model configs and bad output paths: one `diffir: error:` line naming the file, exit 2,
nothing written (``diffir info`` / ``convert`` / ``restore -m`` / ``export`` and ``load_model``)."""

from __future__ import annotations

import json
import os
import pickle
import stat
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch

import diffir
from conftest import tiny_model
from diffir.archs.diffir.config import DiffIRConfig
from diffir.archs.hidiff.config import HIDiffConfig
from diffir.cli import main
from diffir.errors import CheckpointError, ConfigError
from diffir.io import checkpoint, torchfile
from diffir.io.checkpoint import load_model, save_model


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def single_error(err: str, name: object) -> str:
    """The stderr is exactly one `diffir: error:` line naming ``name``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffir: error: "), err
    assert str(name) in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a tiny diffir safetensors file."""
    path = save_model(tiny_model("diffir_sr_x4_s2"), tmp_path_factory.mktemp("good") / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def write(path: Path, tensors: dict, meta: dict[str, str]) -> Path:
    safetensors.torch.save_file(tensors, str(path), metadata=meta)
    return path


def with_config(good, path: Path, text: str | None = None, **changes) -> Path:
    tensors, meta = good
    config = {**json.loads(meta["config"]), **changes}
    return write(path, tensors, {**meta, "config": text if text is not None else json.dumps(config)})


# ------------------------------------------------------------------------------------------- stored configs
BAD_CONFIGS = {
    "not_json": (dict(text="{dim: 8"), "is not valid JSON"),
    "not_object": (dict(text="[8, 8]"), "is a list, not a JSON object"),
    "dim_text": (dict(dim="eight"), "dim must be a positive integer (at most 512), got 'eight'"),
    "dim_negative": (dict(dim=-8), "dim must be a positive integer (at most 512), got -8"),
    "dim_huge": (dict(dim=10**9), "dim must be a positive integer (at most 512), got 1000000000"),
    "blocks_huge": (dict(num_blocks=[10**9, 1, 1, 1]), "num_blocks[0] must be an integer >= 0 (at most 256)"),
    "heads_zero": (dict(heads=[0, 1, 2, 2]), "heads[0] must be a positive integer"),
    "heads_text": (dict(heads="1248"), "heads must be a list of 4 integers"),
    "beta_negative": (dict(linear_start=-5), "linear_start must be a number in (0, 1), got -5"),
    "beta_order": (dict(linear_start=0.5, linear_end=0.2), "needs linear_start < linear_end"),
    "timesteps_zero": (dict(timesteps=0), "timesteps must be a positive integer (at most 10000), got 0"),
    "task": (dict(task="paint"), "task must be one of sr, deblur, inpaint; got 'paint'"),
    "bias_text": (dict(bias="yes"), "bias must be true or false, got 'yes'"),
    "scale_text": (dict(scale="4"), "scale must be a positive integer (at most 4), got '4'"),
    "unknown_key": (dict(depth=3), "unknown model config key 'depth'"),
}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "in.png"
    Image.new("RGB", (16, 16), (120, 60, 30)).save(path)
    return path


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_stored_config_is_one_line_naming_the_file(tmp_path, capsys, good, image, case) -> None:
    changes, message = BAD_CONFIGS[case]
    path = with_config(good, tmp_path / f"{case}.safetensors", **changes)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value) and message in str(info.value) and "\n" not in str(info.value)
    for argv in (["info", path, "--no-macs"], ["convert", path, tmp_path / "out.safetensors"],
                 ["restore", "-m", path, "-i", image, "-o", tmp_path / "restored"]):
        code, out, err = cli(capsys, *argv)
        assert code == 2, argv
        assert message in single_error(err, path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [path]  # nothing written


def test_a_stored_config_missing_fields_is_inferred_from_the_tensors(tmp_path, good) -> None:
    tensors, meta = good
    config = json.loads(meta["config"])
    del config["dim"]
    path = write(tmp_path / "partial.safetensors", tensors, {**meta, "config": json.dumps(config)})
    assert load_model(path).config.dim == 8


def test_config_classes_validate_types_and_ranges() -> None:
    # The same checks serve presets, training overrides (model.overrides) and checkpoint metadata.
    with pytest.raises(ConfigError, match=r"^dim must be a positive integer \(at most 512\), got -8$"):
        diffir.create_model("diffir_sr_x4_s2", dim=-8)
    with pytest.raises(ConfigError, match="heads\\[1\\] must be a positive integer"):
        DiffIRConfig(heads=(1, -2, 4, 8))
    with pytest.raises(ConfigError, match="ffn_expansion_factor must be a number in \\(0, 64\\], got nan"):
        DiffIRConfig(ffn_expansion_factor=float("nan"))
    with pytest.raises(ConfigError, match="group must be a positive integer \\(at most 64\\), got 1000000"):
        HIDiffConfig(group=10**6)
    with pytest.raises(ConfigError, match="encoder must be one of gelu, lrelu; got 5"):
        HIDiffConfig(encoder=5)
    with pytest.raises(ConfigError, match="linear_end must be a number in \\(0, 1\\), got 1.5"):
        HIDiffConfig(linear_end=1.5)
    assert DiffIRConfig(dim=8.0, num_blocks=[1, 1, 1, 1]).dim == 8  # integral floats (YAML/JSON) are accepted


# ------------------------------------------------------------------------------------------- NaN / Inf weights
def test_nan_weights_refused_by_convert_and_warned_by_info_and_load(tmp_path, capsys, good) -> None:
    tensors, meta = good
    tensors = dict(tensors)
    name = "G.patch_embed.proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0, 0, 0] = float("inf")
    path = write(tmp_path / "nan.safetensors", tensors, meta)
    message = f"{path}: tensor {name} has NaN/Inf values; the checkpoint is damaged"

    code, _, err = cli(capsys, "convert", path, tmp_path / "out.safetensors")
    assert code == 2 and single_error(err, path) == f"diffir: error: {message}"
    assert not (tmp_path / "out.safetensors").exists()

    code, out, err = cli(capsys, "info", path, "--no-macs")
    assert code == 0 and "parameters:" in out
    assert err.strip().splitlines() == [f"diffir: warning: {message} (the results will be wrong)"]

    with pytest.warns(UserWarning, match="has NaN/Inf values"):
        load_model(path)


def test_finite_weights_load_without_warning(tmp_path, good) -> None:
    path = write(tmp_path / "ok.safetensors", *good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(path)


# ------------------------------------------------------------------------------------------- damaged files
def _damaged_files(tmp_path: Path, good) -> dict[str, tuple[Path, str]]:
    whole = write(tmp_path / "whole.safetensors", *good).read_bytes()
    files = {
        "empty": (b"", "damaged or truncated safetensors file"),
        "truncated": (whole[: len(whole) // 2], "damaged or truncated safetensors file"),
        "header_beyond_file": ((10**6).to_bytes(8, "little") + b'{"a": 1}', "damaged or truncated safetensors file"),
    }
    out = {}
    for name, (data, message) in files.items():
        (tmp_path / f"{name}.safetensors").write_bytes(data)
        out[name] = (tmp_path / f"{name}.safetensors", message)
    (tmp_path / "whole.safetensors").unlink()
    (tmp_path / "folder.pth").mkdir()
    out["folder"] = (tmp_path / "folder.pth", "folder without model weights")
    torch.save({"params": {"a": 1, "b": "text"}}, tmp_path / "no_tensors.pth")
    out["no_tensors"] = (tmp_path / "no_tensors.pth", "no tensors found")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    out["list"] = (tmp_path / "list.pth", "expected a dict of tensors, found list")
    return out


class _Payload:
    """Pickles as a call of os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_damaged_files_are_one_line_naming_the_file(tmp_path, capsys, good) -> None:
    for name, (path, message) in _damaged_files(tmp_path, good).items():
        with pytest.raises(CheckpointError, match=message):
            load_model(path)
        for argv in (["info", path, "--no-macs"], ["convert", path, tmp_path / "out.safetensors"]):
            code, _, err = cli(capsys, *argv)
            assert code == 2, (name, argv)
            assert message in single_error(err, path), name
        assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_pickle_is_refused_never_run(tmp_path, capsys, container) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    if container == "zip":
        torch.save({"params": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"params": _Payload(marker)}, protocol=2))
    code, _, err = cli(capsys, "info", path, "--no-macs")
    assert code == 2
    assert "refusing to unpickle non-tensor objects" in single_error(err, path)
    assert "posix.system" in err or "nt.system" in err
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_permission_denied_is_not_called_damaged(tmp_path, capsys, monkeypatch, good, suffix) -> None:
    # Tests run as root, which ignores chmod: the denial is simulated where the loaders open the file.
    path = tmp_path / f"m{suffix}"
    if suffix == ".pth":
        save_model(tiny_model("diffir_sr_x4_s2"), path, official=True)
    else:
        write(path, *good)

    def denied(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", denied, raising=False)
    monkeypatch.setattr(torchfile, "open", denied, raising=False)
    code, _, err = cli(capsys, "info", path, "--no-macs")
    assert code == 2
    line = single_error(err, path)
    assert line == f"diffir: error: {path}: permission denied; check the file's permissions"
    with pytest.raises(CheckpointError, match="permission denied"):
        load_model(path)


# ------------------------------------------------------------------------------------------- convert outputs
def test_convert_refuses_impossible_outputs_before_writing(tmp_path, capsys, monkeypatch, good) -> None:
    src = write(tmp_path / "m.safetensors", *good)
    (tmp_path / "folder.safetensors").mkdir()
    (tmp_path / "a_file").write_text("x")
    long_name = "n" * 250 + ".safetensors"
    cases = {
        "existing folder": (tmp_path / "folder.safetensors", "is a folder"),
        "parent is a file": (tmp_path / "a_file" / "out.safetensors", "is a file, not a folder"),
        "name too long": (tmp_path / long_name, "file name too long"),
        "bad suffix": (tmp_path / "out.txt", "output must end in .safetensors"),
    }
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name, (dst, message) in cases.items():
        code, _, err = cli(capsys, "convert", src, dst)
        assert code == 2, name
        assert message in single_error(err, dst), name
    monkeypatch.setattr(checkpoint.os, "access", lambda *a, **k: False)  # root would be allowed anyway
    code, _, err = cli(capsys, "convert", src, tmp_path / "out.safetensors")
    assert code == 2 and "permission denied" in single_error(err, tmp_path / "out.safetensors")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_convert_writes_umask_permissions_and_clears_stale_temporaries(tmp_path, capsys, good) -> None:
    src = write(tmp_path / "m.safetensors", *good)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".m.safetensors.999999999-0123abcd.tmp.safetensors"  # left by a killed conversion (no such pid)
    stale.write_bytes(b"partial")
    old = os.umask(0o022)
    try:
        code, _, err = cli(capsys, "convert", src, out / "m.safetensors")
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((out / "m.safetensors").stat().st_mode) == 0o644
    assert not stale.exists()


# ------------------------------------------------------------------------------------------- info / export sizes
@pytest.mark.parametrize("size,message", [
    ("7", "--size 7: the network needs a multiple of 8, e.g. 8"),
    ("20", "--size 20: the network needs a multiple of 8, e.g. 16"),
    ("0", "--size 0: give the input side in pixels, a positive number"),
    ("-16", "--size -16: give the input side in pixels, a positive number"),
    ("100000", "--size 100000: at most 2048"),
])
def test_info_size_is_checked(tmp_path, capsys, good, size, message) -> None:
    path = write(tmp_path / "m.safetensors", *good)
    code, out, err = cli(capsys, "info", path, "--size", size)
    assert code == 2
    assert message in single_error(err, "--size")


def test_export_checks_its_output_and_size_before_loading(tmp_path, capsys, good) -> None:
    src = write(tmp_path / "m.safetensors", *good)
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["--size", "0x8"], tmp_path / "out.onnx", "bad size '0x8'"),
        (["--size", "abc"], tmp_path / "out.onnx", "bad size 'abc'"),
        ([], tmp_path / "folder.onnx", "is a folder"),
        ([], tmp_path / "a_file" / "m.onnx", "is a file, not a folder"),
    ]
    for extra, dst, message in cases:
        code, _, err = cli(capsys, "export", "onnx", src, dst, *extra)
        assert code == 2, extra
        line = single_error(err, "")
        assert message in line, line
    assert not (tmp_path / "out.onnx").exists()


def test_bad_stored_hidiff_config_names_the_file(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    tiny = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), embed_dim=8,
                encoder_blocks=1, denoiser_inner_channels=16)
    from diffir.archs.hidiff.model import build_model

    path = save_model(build_model(HIDiffConfig(**tiny)).eval(), tmp_path / "hidiff.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    config = {**json.loads(meta["config"]), "timesteps": -3}
    write(path, tensors, {**meta, "config": json.dumps(config)})
    code, _, err = cli(capsys, "convert", path, tmp_path / "out.safetensors")
    assert code == 2
    assert "timesteps must be a positive integer (at most 10000), got -3" in single_error(err, path)
    assert not (tmp_path / "out.safetensors").exists()
