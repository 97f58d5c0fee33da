"""``diffir list [PATTERN]``: the named presets."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*realsr*'")


def run(args: argparse.Namespace) -> int:
    import fnmatch

    from diffir.bundled import BUNDLED, list_bundled
    from diffir.registry import describe, get_config, list_models

    bundled = [n for n in list_bundled() if fnmatch.fnmatch(n, args.pattern)]
    if bundled:
        print("bundled trained weights (use by name: diffir restore -m NAME):")
        for name in bundled:
            print(f"  {name:30s} {BUNDLED[name].description}")
        print("architecture presets (random weights; load official weights with diffir convert / load_model):")
    for name in list_models(args.pattern):
        c = get_config(name)
        print(f"  {name:30s} {c.task:8s} x{c.scale}  S{c.stage}  {describe(name)}")
    return 0
