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
    p.add_argument("--blend", metavar="MODEL", default=None,
                   help="network interpolation: mix in the weights of MODEL (same architecture and configuration; "
                        "a file, run folder or name), e.g. a PSNR-oriented model into a GAN to trade texture for "
                        "fidelity")
    p.add_argument("--blend-weight", type=float, metavar="W", default=None,
                   help="MODEL's share with --blend, from 0 (the input unchanged) to 1 (MODEL); required with --blend")


def run(args: argparse.Namespace) -> int:
    from diffir.errors import DiffIRError
    from diffir.io.checkpoint import convert, load_model
    from diffir.io.locate import locate_model

    if (args.blend is None) != (args.blend_weight is None):
        raise DiffIRError("--blend MODEL and --blend-weight W go together (W = MODEL's share, 0..1)")
    blend = (args.blend, args.blend_weight) if args.blend is not None else None
    out = convert(locate_model(args.input).target, args.output, key=args.key, half=args.half, blend=blend)
    model = load_model(out)
    c = model.descriptor
    print(f"wrote {out}: {type(model).__name__} task={c.task} scale={c.scale} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0
