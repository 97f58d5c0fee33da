"""``diffir info MODEL``: inferred configuration, parameters per part and MACs at the field's convention."""

from __future__ import annotations

import argparse

#: Largest --size: the MAC count runs a real forward pass, whose time and memory grow with the area.
MAX_SIZE = 2048


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint path, `diffir train` run folder, model name or preset name "
                                 "(see `diffir list`)")
    p.add_argument("--size", type=int, default=None,
                   help="input side for MACs (default: 64 for SR — the LR size papers use — else 256)")
    p.add_argument("--no-macs", action="store_true", help="skip the MAC count (it runs one forward pass)")


def run(args: argparse.Namespace) -> int:
    from diffir.errors import ConfigError, one_line
    from diffir.io.checkpoint import load_model
    from diffir.io.locate import locate_model
    from diffir.profile import count_macs, parameter_breakdown

    if args.size is not None and args.size < 1:
        raise ConfigError(f"--size {args.size}: give the input side in pixels, a positive number")
    if args.size is not None and args.size > MAX_SIZE:
        raise ConfigError(f"--size {args.size}: at most {MAX_SIZE} (the count runs one forward pass at that size; "
                          "MACs grow with the area)")
    where = locate_model(args.model, allow_preset=True)
    model = load_model(args.model, random_weights=True)
    c = model.config
    multiple = model.descriptor.size_multiple
    if args.size is not None and args.size % multiple:
        raise ConfigError(f"--size {args.size}: the network needs a multiple of {multiple}, e.g. "
                          f"{max(multiple, args.size // multiple * multiple)}")
    detail = c.meta.get("source") or c.meta.get("preset", "")
    origin = {"preset": "preset, random weights: ", "bundled": "bundled: ", "installed": "installed: "}
    print(f"model: {type(model).__name__} ({origin.get(where.source, '')}{one_line(detail or where.name)})")
    if where.source == "bundled":
        from diffir.bundled import BUNDLED

        print("model card:")
        print(BUNDLED[where.name].card())
        print("config:")
    for key, value in c.to_dict().items():
        print(f"  {key:22s} {value}")
    if c.meta.get("assumed"):
        print(f"  (not stored in the file, official defaults assumed: {', '.join(c.meta['assumed'])})")
    print("parameters:")
    for part, n in parameter_breakdown(model).items():
        print(f"  {part:22s} {n:>12,}")
    if not args.no_macs and model.descriptor.generative and args.size is None:
        print("MACs: a generative model's cost grows with its steps and image size: --size N counts a one-step "
              "restore of an NxN input (the cleaner's output is at least min_size on its short side)")
    elif not args.no_macs:
        size = args.size or (64 if c.task == "sr" else 256)
        macs = count_macs(model, size)
        print(f"MACs at {size}x{size} input: {macs / 1e9:.2f} G  ({2 * macs / 1e9:.2f} GFLOPs)")
    return 0
