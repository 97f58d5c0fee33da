"""``diffir convert IN OUT``: official .pth/.ckpt/raw dict/safetensors (or one file per network, as HI-Diff is
released) → diffir safetensors, or back to the official layout."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="checkpoint to read (.pth, .ckpt, .safetensors), a folder of official per-network "
                                 "files, or such files separated by commas (net_g.pth,net_le_dm.pth,net_d.pth)")
    p.add_argument("output", help="file to write: .safetensors (diffir format) or .pth (official BasicSR layout); "
                                  "a folder name without suffix for architectures released as one file per network")
    p.add_argument("--key", default=None,
                   help="container entry to read, e.g. params, params_ema, generatorS1 (default: automatic)")
    p.add_argument("--half", action="store_true",
                   help="store the weights as float16: half the file size (the bundled models ship so); they load "
                        "as float32")


def run(args: argparse.Namespace) -> int:
    from diffir.io.checkpoint import convert, load_model
    from diffir.io.locate import locate_model

    out = convert(locate_model(args.input).target, args.output, key=args.key, half=args.half)
    model = load_model(out)
    c = model.descriptor
    print(f"wrote {out}: {type(model).__name__} task={c.task} scale={c.scale} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0
