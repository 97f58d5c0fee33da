"""Bad inputs thrown at the command line and the API, as an adversarial user would.

Each case prepares files in a fresh folder and says what a good answer is: a one-line error naming the file
(exit 2, or exit 1 when one file of a batch fails), a one-line warning naming the file (exit 0), or success.
:func:`run_case` runs a case in-process and classifies the outcome:

- ``clean``     the expected answer: exit code, one ``diffir: error|warning:`` line naming the right file, nothing
                written for a bad input, post-conditions (good files of a mixed folder restored, permissions, no
                temporary files) hold;
- ``unclear``   an error, but not one line naming the file (or the wrong exit code, or a post-condition failed);
- ``silent``    exit 0 without a word where an error or warning was due (a silent wrong result);
- ``traceback`` an exception escaped, or the catch-all ``internal error`` line (a bug).

``tests/test_fuzz.py`` asserts every case is ``clean``.  Run as a script it prints the counts per category —
``PYTHONPATH=<checkout>/src python tests/fuzz_cases.py`` measures any checkout, as the hardening note did.
Cases are bounded (small images, tiny models, a 2-iteration training config) and seeded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20261203
HERE = Path(__file__).resolve().parent
CASE_TIMEOUT = 60  # seconds; a case that runs longer is a failure (unbounded work)


@dataclass
class Case:
    category: str
    name: str
    argv: list[str] | None = None  # a CLI command (in-process ``diffir.cli.main``)
    api: Callable[[], object] | None = None  # or an API call expected to raise DiffIRError (or warn)
    expect: str = "error"  # error | file_error (exit 1: one file of a batch) | warning | ok
    names: str | None = None  # the file whose name the message must contain
    no_output: Path | None = None  # a folder that must hold no (non-hidden) file afterwards
    check: Callable[[], str | None] | None = None  # post-condition: None if it holds, else what is wrong
    subprocess_argv: list[str] | None = None  # run as a separate process (kill -9 cases)
    isolate: bool = False  # run argv in a child process with a memory limit (cases that could exhaust memory)
    says: str = ""  # text the error line must also contain (e.g. how to raise a limit)


@dataclass
class Env:
    root: Path
    tiny_sr: Path
    tiny_inpaint: Path
    good_png: Path
    train_gt: Path
    val_gt: Path
    val_lq: Path
    counter: list[int] = field(default_factory=lambda: [0])

    def folder(self, name: str) -> Path:
        self.counter[0] += 1
        path = self.root / f"{self.counter[0]:03d}_{name}"
        path.mkdir(parents=True)
        return path


# ---------------------------------------------------------------------------------------------- file builders
def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A grey PNG of width×height zeros in a few kB (compressed rows written directly, no big array)."""
    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    body = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _safetensors_with(path: Path, header: dict, data: bytes = b"") -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def _tiny_safetensors_meta(env: Env, path: Path, **meta_changes) -> None:
    """The tiny SR model file with its metadata ``config`` JSON (or other fields) changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(env.tiny_sr), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    config = json.loads(meta["config"])
    for key, value in meta_changes.items():
        if key == "raw_config":
            meta["config"] = value
        else:
            config[key] = value
    if "raw_config" not in meta_changes:
        meta["config"] = json.dumps(config)
    save_file(tensors, str(path), metadata=meta)


def _malicious_pickle(path: Path, marker: Path) -> None:
    """A torch-style zip checkpoint whose pickle would create ``marker`` if unpickled unsafely."""
    import pickle

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(path, "wb") as fh:
        torch.save({"params": Payload()}, fh, pickle_module=pickle)


# ---------------------------------------------------------------------------------------------- the catalogue
def image_cases(env: Env) -> list[Case]:
    rng = random.Random(SEED)
    good = env.good_png.read_bytes()
    cases = []

    def restore_one(name: str, data: bytes | None, expect: str = "file_error", **kw) -> Case:
        inp, out = env.folder("img_in"), env.folder("img_out")
        path = inp / name
        if data is not None:
            path.write_bytes(data)
        return Case("images", name, ["restore", "-i", str(path), "-o", str(out), "-m", str(env.tiny_sr), "-q"],
                    expect=expect, names=path.name, no_output=out if expect != "ok" else None, **kw)

    cases.append(restore_one("empty.png", b""))
    cases.append(restore_one("text.png", b"hello, not an image\n"))
    cases.append(restore_one("truncated.png", good[: len(good) // 3]))
    cases.append(restore_one("header_only.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"))
    for i in range(6):  # seeded byte flips in the compressed data
        data = bytearray(good)
        for _ in range(8):
            data[rng.randrange(60, len(data))] = rng.randrange(256)
        cases.append(restore_one(f"flipped_{i}.png", bytes(data), expect="any"))
    cases.append(restore_one("random.webp", bytes(rng.randrange(256) for _ in range(2000))))
    # names a terminal would mangle: printed escaped, on one line
    for tricky in ("new\nline.png", "tab\tname.png", "esc\x1b[31mred.png"):
        inp, out = env.folder("img_in"), env.folder("img_out")
        (inp / tricky).write_bytes(b"not an image")
        from_name = tricky.replace("\n", "\\n").replace("\t", "\\t").replace("\x1b", "\\x1b")
        cases.append(Case("images", f"name {from_name!r}", ["restore", "-i", str(inp / tricky), "-o", str(out), "-m",
                                                             str(env.tiny_sr), "-q"],
                          expect="file_error", names=from_name, no_output=out))
    # a folder without images as input
    inp, out = env.folder("img_in"), env.folder("img_out")
    (inp / "empty_folder").mkdir()
    (inp / "empty_folder" / "x.txt").write_text("x")
    cases.append(Case("images", "folder without images", ["restore", "-i", str(inp / "empty_folder"), "-o",
                                                           str(out), "-m", str(env.tiny_sr), "-q"],
                      names="empty_folder", no_output=out))
    # mixed folder: the good files restored, one line per bad file, exit 1
    inp, out = env.folder("mixed_in"), env.folder("mixed_out")
    (inp / "a.png").write_bytes(good)
    (inp / "b.png").write_bytes(good)
    (inp / "bad.png").write_bytes(good[:100])
    cases.append(Case("images", "mixed folder", ["restore", "-i", str(inp), "-o", str(out), "-m", str(env.tiny_sr),
                                                 "-q"], expect="file_error", names="bad.png",
                      check=lambda out=out: None if sorted(p.name for p in out.iterdir()) == ["a_out.png", "b_out.png"]
                      else f"outputs: {sorted(p.name for p in out.iterdir())}"))
    # an animated image: the first frame only, with a word
    inp, out = env.folder("anim_in"), env.folder("anim_out")
    frames = [Image.fromarray(np.full((16, 16, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(inp / "anim.gif", save_all=True, append_images=frames[1:])
    cases.append(Case("images", "animated gif", ["restore", "-i", str(inp / "anim.gif"), "-o", str(out), "-m",
                                                 str(env.tiny_sr), "-q"], expect="warning", names="anim.gif"))
    # an unreadable folder (simulated: tests may run as root)
    cases.append(Case("images", "missing input", ["restore", "-i", str(env.root / "nope.png"), "-o",
                                                  str(env.folder("o")), "-m", str(env.tiny_sr), "-q"],
                      names="nope.png"))
    return cases


def mask_cases(env: Env) -> list[Case]:
    cases = []
    rgb = np.random.default_rng(SEED).integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def inpaint(name: str, mask: Image.Image | bytes | None, extra: list[str] = (), expect: str = "warning",
                names: str | None = None) -> Case:
        inp, out = env.folder("mask_in"), env.folder("mask_out")
        Image.fromarray(rgb).save(inp / "face.png")
        mask_path = inp / f"{name}.png"
        if isinstance(mask, bytes):
            mask_path.write_bytes(mask)
        elif mask is not None:
            mask.save(mask_path)
        return Case("masks", name, ["restore", "-i", str(inp / "face.png"), "--mask", str(mask_path), "-o", str(out),
                                    "-m", str(env.tiny_inpaint), "-q", *extra], expect=expect,
                    names=names or mask_path.name, no_output=out if expect in ("error", "file_error") else None)

    cases.append(inpaint("all_black", Image.new("L", (16, 16), 0)))
    cases.append(inpaint("all_white", Image.new("L", (16, 16), 255)))
    dim = np.zeros((16, 16, 3), np.uint8)
    dim[4:8, 4:8] = (200, 0, 0)  # a red hole: mean over channels below 0.5
    cases.append(inpaint("red_hole", Image.fromarray(dim), expect="ok"))
    alpha = np.zeros((16, 16, 4), np.uint8)
    alpha[..., 3] = 255
    alpha[4:8, 4:8, 3] = 0  # the hole only in the alpha channel (transparent = hole)
    cases.append(inpaint("alpha_hole", Image.fromarray(alpha, "RGBA"), expect="ok"))
    wide = np.zeros((16, 16), np.uint16)
    wide[4:8, 4:8] = 255  # a 16-bit file holding 8-bit values
    cases.append(inpaint("wide_8bit_values", Image.fromarray(wide), expect="ok"))
    for value in ("nan", "2", "-1"):
        hole = Image.new("L", (16, 16), 0)
        hole.paste(255, (4, 4, 8, 8))
        cases.append(inpaint(f"threshold_{value}", hole, ["--mask-threshold", value], expect="error", names=value))
    cases.append(inpaint("wrong_size", Image.new("L", (8, 8), 255), expect="file_error"))
    cases.append(inpaint("not_an_image", b"garbage", expect="file_error"))
    return cases


def checkpoint_cases(env: Env) -> list[Case]:
    rng = random.Random(SEED + 1)
    good = env.tiny_sr.read_bytes()
    cases = []
    img = env.good_png

    def bad_file(name: str, data: bytes | None = None, build: Callable[[Path], None] | None = None) -> list[Case]:
        folder = env.folder("ckpt")
        path = folder / name
        if build is not None:
            build(path)
        else:
            path.write_bytes(data)
        out = env.folder("ckpt_out")
        from diffir import load_model

        return [
            Case("checkpoints", f"restore -m {name}", ["restore", "-i", str(img), "-o", str(out), "-m", str(path),
                                                       "-q"], names=name, no_output=out),
            Case("checkpoints", f"info {name}", ["info", str(path), "--no-macs"], names=name),
            Case("checkpoints", f"convert {name}", ["convert", str(path), str(out / "c.safetensors")], names=name,
                 no_output=out),
            Case("checkpoints", f"load_model {name}", api=lambda: load_model(str(path)), names=name),
        ]

    cases += bad_file("empty.safetensors", b"")
    cases += bad_file("random.safetensors", bytes(rng.randrange(256) for _ in range(512)))
    cases += bad_file("truncated.safetensors", good[: len(good) // 2])
    cases += bad_file("header_past_end.safetensors", struct.pack("<Q", 10**9) + b"{}")
    cases += bad_file("not_json_config.safetensors", build=lambda p: _tiny_safetensors_meta(env, p, raw_config="{nope"))
    cases += bad_file("dim_eight.safetensors", build=lambda p: _tiny_safetensors_meta(env, p, dim="eight"))
    cases += bad_file("linear_start.safetensors", build=lambda p: _tiny_safetensors_meta(env, p, linear_start=-5))
    cases += bad_file("huge_dim.safetensors", build=lambda p: _tiny_safetensors_meta(env, p, dim=10**9))
    cases += bad_file("no_tensors.safetensors", build=lambda p: _safetensors_with(p, {"__metadata__": {}}))
    cases += bad_file("text.pth", b"this is not a checkpoint")
    marker = env.root / "PWNED"
    cases += bad_file("malicious.pth", build=lambda p: _malicious_pickle(p, marker))
    cases.append(Case("checkpoints", "malicious pickle never runs", api=lambda: None, expect="ok",
                      check=lambda: "the pickle payload ran" if marker.exists() else None))

    def nan_weights(path: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(env.tiny_sr))
        first = sorted(tensors)[0]
        tensors[first] = tensors[first].clone().fill_(float("nan"))
        from safetensors import safe_open

        with safe_open(str(env.tiny_sr), "pt") as f:
            meta = f.metadata()
        save_file(tensors, str(path), metadata=meta)

    folder = env.folder("nan")
    nan_path = folder / "nan.safetensors"
    nan_weights(nan_path)
    out = env.folder("nan_out")
    cases.append(Case("checkpoints", "convert NaN weights", ["convert", str(nan_path), str(out / "c.safetensors")],
                      names="nan.safetensors", no_output=out))
    cases.append(Case("checkpoints", "info NaN weights", ["info", str(nan_path), "--no-macs"], expect="warning",
                      names="nan.safetensors"))
    # convert to places it cannot write
    folder = env.folder("convert_dst")
    cases.append(Case("checkpoints", "convert to a folder", ["convert", str(env.tiny_sr), str(folder)],
                      names=folder.name, no_output=folder))
    blocker = env.folder("blocker") / "file"
    blocker.write_text("x")
    cases.append(Case("checkpoints", "convert below a file", ["convert", str(env.tiny_sr),
                                                              str(blocker / "x.safetensors")], names="file"))
    for size in ("7", "0", "-4"):
        cases.append(Case("checkpoints", f"info --size {size}", ["info", str(env.tiny_sr), "--size", size],
                          names=size))
    return cases


def _train_base(env: Env) -> dict:
    return {
        "name": "fuzz", "stage": "s1",
        "model": {"preset": "diffir_sr_x4_s1", "overrides": {"dim": 8, "num_blocks": [1, 1, 1, 1],
                                                             "num_refinement_blocks": 1, "heads": [1, 1, 2, 2],
                                                             "n_encoder_res": 1}},
        "data": {"train": {"kind": "folder", "gt_dir": str(env.train_gt), "patch_size": 32,
                           "degradation": {"name": "bicubic_x4"}}},
        "train": {"iters": 2, "batch_size": 2, "cpu_threads": 1},
        "val": {"every": 0},
        "log": {"every": 1},
        "checkpoint": {"every": 1, "keep": 1},
    }


def _set(config: dict, dotted: str, value) -> dict:
    import copy

    out = copy.deepcopy(config)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def training_cases(env: Env) -> list[Case]:
    import yaml

    base = _train_base(env)
    cases = []

    def train(name: str, text: str | bytes | None = None, config: dict | None = None, extra: list[str] = (),
              names: str | None = None, expect: str = "error") -> Case:
        folder = env.folder("cfg")
        path = folder / f"{name}.yaml"
        if config is not None:
            text = yaml.safe_dump(config)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = folder / "run"
        return Case("training", name, ["train", "-c", str(path), "--out", str(out), "-q", *extra], expect=expect,
                    names=names or path.name, no_output=out)

    bad_values = [
        ("train.grad_clip", -1.0), ("data.train.patch_size", 0), ("data.train.patch_size", -8),
        ("data.train.patch_size", 4), ("data.train.patch_size", 30), ("optim.g.lr", -1.0),
        ("optim.g.lr", float("nan")), ("model.overrides.dim", -8), ("data.train.num_workers", -1),
        ("data.train.degradation.name", "bicubic_x2"), ("guard.window", 0), ("train.device", "tpu"),
        ("train.batch_size", 100000), ("train.iters", 10**23),
    ]
    for key, value in bad_values:
        config = _set(base, key, value)
        if key == "optim.g.lr":
            config = _set(config, "optim.g.betas", [0.9, 0.99])
        cases.append(train(f"{key}={value}", config=config))
    import torch

    if not torch.cuda.is_available():
        cases.append(train("train.device=cuda", config=_set(base, "train.device", "cuda")))
    folder = env.folder("vgg")
    (folder / "unreadable.pth").write_bytes(b"\x00" * 64)
    marker = env.root / "PWNED_VGG"
    _malicious_pickle(folder / "evil.pth", marker)
    for vgg in ("unreadable.pth", "evil.pth"):
        config = _set(_set(base, "losses.perceptual.weight", 1.0), "losses.perceptual.vgg_weights", str(folder / vgg))
        cases.append(train(f"vgg_weights {vgg}", config=config, names=vgg))
    cases.append(Case("training", "malicious vgg never runs", api=lambda: None, expect="ok",
                      check=lambda: "the vgg pickle payload ran" if marker.exists() else None))
    cases.append(train("binary", text=env.good_png.read_bytes()))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    cases.append(train("alias_bomb", text=bomb))
    good_yaml = yaml.safe_dump(base)
    cases.append(train("set_bad_yaml", text=good_yaml, extra=["--set", "train.iters=[1, 2"], names="train.iters"))
    cases.append(train("set_python_tag", text=good_yaml, extra=["--set", "train.iters=!!python/object:os.system 1"],
                       names="train.iters"))
    cases.append(train("python_tag", text=good_yaml + "x: !!python/object/apply:os.system ['true']\n"))
    return cases


def cli_value_cases(env: Env) -> list[Case]:
    cases = []
    for flag, value in (("--outscale", "inf"), ("--outscale", "nan"), ("--outscale", "0"), ("--outscale", "-2"),
                        ("--outscale", "1e6"), ("--seed", str(2**70)), ("--max-pixels", "-1"),
                        ("--tile", "-5"), ("--tile", "x"), ("--quality", "500")):
        out = env.folder("val_out")
        cases.append(Case("cli values", f"restore {flag} {value}", ["restore", "-i", str(env.good_png), "-o", str(out),
                                                                    "-m", str(env.tiny_sr), "-q", flag, value],
                          names=value, no_output=out))
    out = env.folder("eval_out")
    cases.append(Case("cli values", "eval --tile x", ["eval", "-m", str(env.tiny_sr), "--gt", str(env.val_gt),
                                                      "--lq", str(env.val_lq), "-o", str(out / "r"), "--tile", "x"],
                      names="x", no_output=out))
    # the output size bounds the work: 81 MP of grey zeros (a few kB) would become 1.3 gigapixels at x4
    folder = env.folder("bomb")
    _bomb_png(folder / "bomb.png", 9000, 9000)
    out = env.folder("bomb_out")
    cases.append(Case("resources", "81 MP input -> 1.3 GP output", ["restore", "-i", str(folder / "bomb.png"), "-o",
                                                                   str(out), "-m", str(env.tiny_sr), "-q"],
                      expect="file_error", names="bomb.png", no_output=out, isolate=True,
                      says="--max-output-pixels"))
    return cases


def file_cases(env: Env) -> list[Case]:
    """Outputs follow the umask; a killed run's temporary files are gone after the next run in that folder."""
    cases = []
    mode = 0o666 & ~_umask()

    def modes(folder: Path) -> str | None:
        wrong = [f"{p.relative_to(folder)}: {oct(p.stat().st_mode & 0o777)}" for p in sorted(folder.rglob("*"))
                 if p.is_file() and p.stat().st_mode & 0o777 != mode]
        return f"not {oct(mode)}: {wrong}" if wrong else None

    out = env.folder("mode_restore")
    cases.append(Case("files", "restore output mode", ["restore", "-i", str(env.good_png), "-o", str(out), "-m",
                                                       str(env.tiny_sr), "-q"], expect="ok",
                      check=lambda out=out: modes(out)))
    out = env.folder("mode_convert")
    cases.append(Case("files", "convert output mode", ["convert", str(env.tiny_sr), str(out / "c.safetensors")],
                      expect="ok", check=lambda out=out: modes(out)))
    folder = env.folder("mode_train")
    import yaml

    (folder / "cfg.yaml").write_text(yaml.safe_dump(_train_base(env)))
    cases.append(Case("files", "train output modes", ["train", "-c", str(folder / "cfg.yaml"), "--out",
                                                      str(folder / "run"), "-q"], expect="ok",
                      check=lambda f=folder: modes(f / "run")))
    # kill -9 in the middle of writing (right before the rename), then a normal rerun in the same folder
    out = env.folder("killed_restore")
    restore = ["restore", "-i", str(env.good_png), "-o", str(out), "-m", str(env.tiny_sr), "-q", "--overwrite"]
    cases.append(Case("files", "restore killed, rerun leaves no temp", restore, expect="ok",
                      subprocess_argv=restore, check=lambda out=out: _temp_files(out)))
    folder = env.folder("killed_train")
    (folder / "cfg.yaml").write_text(yaml.safe_dump(_set(_train_base(env), "train.iters", 3)))
    train = ["train", "-c", str(folder / "cfg.yaml"), "--out", str(folder / "run"), "-q", "--resume", "auto"]
    cases.append(Case("files", "train killed, rerun leaves no temp", train, expect="ok", subprocess_argv=train,
                      check=lambda f=folder: _temp_files(f / "run")))
    return cases


def _temp_files(folder: Path) -> str | None:
    left = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    return f"temporary files left: {left}" if left else None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


CATEGORIES = (image_cases, mask_cases, checkpoint_cases, training_cases, cli_value_cases, file_cases)

# Runs the command in a child process that kills itself with SIGKILL right before its first rename of a
# temporary file (the moment a crash would leave one behind).
_KILLER = """
import os, signal, sys
real_replace, real_rename = os.replace, os.rename
def killing(real):
    def call(src, dst, *a, **k):
        if ".tmp" in os.path.basename(str(src)) or "tmp" in os.path.basename(str(src)):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *a, **k)
    return call
os.replace, os.rename = killing(real_replace), killing(real_rename)
from diffir.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ---------------------------------------------------------------------------------------------- running
@dataclass
class Outcome:
    verdict: str  # clean | unclear | silent | traceback
    detail: str


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout


def run_case(case: Case) -> Outcome:
    import warnings

    if case.subprocess_argv is not None:
        killed = subprocess.run([sys.executable, "-c", _KILLER, *case.subprocess_argv], capture_output=True,
                                timeout=300, env=dict(os.environ))
        if killed.returncode != -signal.SIGKILL:
            return Outcome("unclear", f"the child was not killed mid-write (exit {killed.returncode}): "
                           f"{killed.stderr.decode()[-300:]}")
    if case.isolate:
        return _classify(case, *_run_isolated(case.argv), raised=None, caught=[], took=0.0)
    err = io.StringIO()
    code: int | None = None
    raised: BaseException | None = None
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if case.argv is not None:
                from diffir.cli import main

                code = main(list(case.argv))
            else:
                case.api()
                code = 0
    except _Timeout:
        return Outcome("traceback", f"still running after {CASE_TIMEOUT} s (unbounded work)")
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - classified below
        raised = exc
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    took = time.perf_counter() - start
    return _classify(case, err.getvalue(), code, raised, caught, took)


_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from diffir.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run_isolated(argv: list[str]) -> tuple[str, int | None]:
    try:
        child = subprocess.run([sys.executable, "-c", _LIMITED, *argv], capture_output=True, timeout=CASE_TIMEOUT,
                               env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return f"Traceback: still running after {CASE_TIMEOUT} s (unbounded work)", None
    text = child.stderr.decode(errors="replace")
    if child.returncode < 0:
        text += f"\nTraceback: killed by signal {-child.returncode}"
    return text, child.returncode


def _classify(case: Case, text: str, code: int | None, raised: BaseException | None, caught: list,
              took: float) -> Outcome:
    lines = [line for line in text.splitlines() if line.strip()]
    if case.api is not None and raised is not None:
        from diffir.errors import DiffIRError

        if isinstance(raised, DiffIRError):
            lines = [f"diffir: error: {raised}"] if "\n" not in str(raised) else str(raised).splitlines()
            code = 2
            raised = None
    if case.api is not None and raised is None and code == 0:
        lines += [f"diffir: warning: {w.message}" for w in caught]
    elif case.argv is not None:
        lines += [f"diffir: warning: {w.message}" for w in caught if f"{w.message}" not in text]
    if raised is not None:
        return Outcome("traceback", f"{type(raised).__name__}: {str(raised)[:200]}")
    if "Traceback" in text or "internal error" in text:
        return Outcome("traceback", text.strip()[-300:])
    errors = [line for line in lines if line.startswith("diffir: error") or ": error:" in line]
    warns = [line for line in lines if line.startswith("diffir: warning")]
    if case.expect == "any" and code == 0:
        case.no_output = None  # the damage left a decodable file: its restoration is a fine answer
    problem = _post_conditions(case)
    if case.expect == "any":  # a fuzzed file that may or may not still decode: any clean answer
        if code == 0 or (code in (1, 2) and len(errors) == 1 and case.names in errors[0]):
            return Outcome("clean" if problem is None else "unclear", problem or f"exit {code}")
        return Outcome("unclear", f"exit {code}: {lines[-3:]}")
    if case.expect == "ok":
        if code == 0 and problem is None:
            return Outcome("clean", f"{took:.1f} s")
        return Outcome("unclear", problem or f"exit {code}: {lines[-3:]}")
    if case.expect == "warning":
        if code == 0 and len(warns) >= 1 and any(case.names in w for w in warns) and problem is None:
            return Outcome("clean", warns[0])
        if code == 0 and not any(case.names in w for w in warns):
            return Outcome("silent", f"exit 0, no warning naming {case.names}")
        return Outcome("unclear", problem or f"exit {code}: {lines[-3:]}")
    want = (1, 2) if case.expect == "file_error" else (2,)
    if code == 0 and not errors:
        return Outcome("silent", f"exit 0 without an error ({lines[-2:]})")
    if code not in want:
        return Outcome("unclear", f"exit {code}, wanted {want}: {lines[-3:]}")
    if len(errors) != 1 or case.names not in errors[0] or case.says not in errors[0]:
        return Outcome("unclear", f"{len(errors)} error lines, wanted one naming {case.names!r} "
                       f"{f'and saying {case.says!r}' if case.says else ''}: {lines[-3:]}")
    if problem is not None:
        return Outcome("unclear", problem)
    return Outcome("clean", errors[0][:160])


def _post_conditions(case: Case) -> str | None:
    if case.no_output is not None and case.no_output.exists():
        written = [p.name for p in case.no_output.rglob("*") if p.is_file()]
        if written:
            return f"wrote {written[:3]} for a bad input"
    return case.check() if case.check is not None else None


def build_env(root: Path, data: Callable[..., Path]) -> Env:
    """Tiny models and small real images in ``root``; ``data(*parts)`` finds a shared data folder."""
    import diffir
    from conftest import tiny_model

    root.mkdir(parents=True, exist_ok=True)
    tiny_sr, tiny_inpaint = root / "tiny_sr.safetensors", root / "tiny_inpaint.safetensors"
    diffir.save_model(tiny_model("diffir_sr_x4_s2"), tiny_sr)
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), tiny_inpaint)
    set5 = data("sr", "Set5", "HR")
    first = sorted(set5.iterdir())[0]
    with Image.open(first) as im:
        good = root / "good.png"
        im.convert("RGB").crop((0, 0, 24, 24)).save(good)
    return Env(root=root, tiny_sr=tiny_sr, tiny_inpaint=tiny_inpaint, good_png=good,
               train_gt=data("train", "T91"), val_gt=set5, val_lq=data("sr", "Set5", "LR_bicubic", "X4"))


def all_cases(env: Env) -> list[Case]:
    return [case for make in CATEGORIES for case in make(env)]


def report(root: Path) -> dict[str, dict[str, int]]:
    sys.path.insert(0, str(HERE))
    from conftest import shared_data

    os.umask(0o022)
    env = build_env(root, shared_data)
    counts: dict[str, dict[str, int]] = {}
    for case in all_cases(env):
        outcome = run_case(case)
        row = counts.setdefault(case.category, {"cases": 0, "clean": 0, "unclear": 0, "silent": 0, "traceback": 0})
        row["cases"] += 1
        row[outcome.verdict] += 1
        if outcome.verdict != "clean":
            print(f"{outcome.verdict:9s} {case.category}: {case.name!r}: {outcome.detail[:200]}", file=sys.__stdout__)
    return counts


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        table = report(Path(tmp))
    total = {k: sum(r[k] for r in table.values()) for k in ("cases", "clean", "unclear", "silent", "traceback")}
    print("| category | cases | clean | unclear | silent | traceback |\n|---|---|---|---|---|---|")
    for name, row in {**table, "all": total}.items():
        print(f"| {name} | " + " | ".join(str(row[k]) for k in ("cases", "clean", "unclear", "silent", "traceback"))
              + " |")
