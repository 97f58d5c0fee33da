"""``diffir list [PATTERN]``: the named presets."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*realsr*'")


def run(args: argparse.Namespace) -> int:
    from diffir.registry import describe, get_config, list_models

    for name in list_models(args.pattern):
        c = get_config(name)
        print(f"{name:30s} {c.task:8s} x{c.scale}  S{c.stage}  {describe(name)}")
    return 0
