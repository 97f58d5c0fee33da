"""``diffir convert IN OUT``: official .pth/.ckpt/raw dict/safetensors → diffir safetensors, or back (.pth)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="checkpoint to read (.pth, .ckpt, .safetensors)")
    p.add_argument("output", help="file to write: .safetensors (diffir format) or .pth (official BasicSR layout)")
    p.add_argument("--key", default=None,
                   help="container entry to read, e.g. params, params_ema, generatorS1 (default: automatic)")


def run(args: argparse.Namespace) -> int:
    from diffir.io.checkpoint import convert, load_model

    out = convert(args.input, args.output, key=args.key)
    model = load_model(out)
    c = model.config
    print(f"wrote {out}: {type(model).__name__} task={c.task} scale={c.scale} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0
