"""``diffir info MODEL``: inferred configuration, parameters per part and MACs at the field's convention."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint path, `diffir train` run folder, model name or preset name "
                                 "(see `diffir list`)")
    p.add_argument("--size", type=int, default=None,
                   help="input side for MACs (default: 64 for SR — the LR size papers use — else 256)")
    p.add_argument("--no-macs", action="store_true", help="skip the MAC count (it runs one forward pass)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from diffir.bundled import bundled_path
    from diffir.io.checkpoint import load_model
    from diffir.pipelines.model_source import resolve_model_path
    from diffir.profile import count_macs, parameter_breakdown
    from diffir.registry import create_model, preset_names

    looks_like_path = Path(args.model).exists() or any(ch in args.model for ch in "/\\.")
    bundled = bundled_path(args.model)
    if bundled is not None:
        model = load_model(bundled)
    elif "," in args.model:  # one model released as one file per network: net_g.pth,net_le_dm.pth,net_d.pth
        model = load_model(resolve_model_path(args.model))
    elif looks_like_path:
        model = load_model(args.model)  # a file, or a run folder (its model.safetensors)
    elif args.model in preset_names():
        model = create_model(args.model).eval()
    else:  # a name in the models folder; else one line naming the closest known model
        model = load_model(resolve_model_path(args.model))
    c = model.config
    print(f"model: {type(model).__name__} ({c.meta.get('source') or c.meta.get('preset', '')})")
    for key, value in c.to_dict().items():
        print(f"  {key:22s} {value}")
    if c.meta.get("assumed"):
        print(f"  (not stored in the file, official defaults assumed: {', '.join(c.meta['assumed'])})")
    print("parameters:")
    for part, n in parameter_breakdown(model).items():
        print(f"  {part:22s} {n:>12,}")
    if not args.no_macs:
        size = args.size or (64 if c.task == "sr" else 256)
        macs = count_macs(model, size)
        print(f"MACs at {size}x{size} input: {macs / 1e9:.2f} G  ({2 * macs / 1e9:.2f} GFLOPs)")
    return 0
