"""``diffir list [PATTERN] [--official]``: bundled, installed and preset models, or the officially released files."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. '*realsr*'")
    p.add_argument("--official", action="store_true",
                   help="list the authors' released weight files: task, what each is for, where they are published "
                        "and how to install one for use by name")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    return _official(args.pattern) if args.official else _models(args.pattern)


def _models(pattern: str) -> int:
    import fnmatch

    from diffir.bundled import BUNDLED, list_bundled
    from diffir.io.locate import installed_models, models_dir
    from diffir.registry import describe, get_config, list_models

    bundled = [n for n in list_bundled() if fnmatch.fnmatch(n, pattern)]
    if bundled:
        print("bundled (trained weights inside the package; diffir restore --task TASK, or -m NAME; "
              "diffir info NAME shows its card):")
        for name in bundled:
            entry = BUNDLED[name]
            print(f"  {name:30s} {entry.task:10s} {entry.description}")
    installed = {n: p for n, p in installed_models().items() if fnmatch.fnmatch(n, pattern)}
    print(f"installed in {models_dir()} ($DIFFIR_MODELS; use by name):")
    for name, path in installed.items():
        print(f"  {name:30s} {_installed_summary(path)}")
    if not installed:
        print("  (none; install official weights with `diffir convert FILE "
              f"{models_dir()}/NAME.safetensors`, see `diffir list --official`)")
    print("architecture presets (random weights unless installed under the same name):")
    for name in list_models(pattern):
        c = get_config(name)
        mark = "  [installed]" if name in installed_models() else ""
        print(f"  {name:30s} {c.task:8s} x{c.scale}  S{c.stage}  {describe(name)}{mark}")
    return 0


def _installed_summary(path) -> str:
    """Task and scale from a diffir safetensors file's metadata (no weights read); .pth files are not opened."""
    from diffir.errors import one_line
    from diffir.io.locate import installed_metadata

    if path.suffix != ".safetensors":
        return f"{path.name} (official layout; `diffir info {path}` shows what it is)"
    meta = installed_metadata(path)
    if meta is None:
        return f"{path.name} (unreadable: see `diffir info {path}`)"
    # Metadata is text from the file: shown escaped and short, so a crafted value cannot rewrite the terminal.
    task, scale, arch = (one_line(meta.get(k, default))[:20] for k, default in
                         (("task", "?"), ("scale", "?"), ("arch", "?")))
    return f"{arch:10s} {task:8s} x{scale}  {one_line(path.name)}"


def _official(pattern: str) -> int:
    import fnmatch

    from diffir.io.locate import convert_command, installed_models
    from diffir.official import OFFICIAL_WEIGHTS

    installed = installed_models()
    rows = [w for w in OFFICIAL_WEIGHTS
            if fnmatch.fnmatch(w.file, pattern) or fnmatch.fnmatch(w.install_name, pattern)]  # fmt: skip
    print("officially released weights (download them yourself; diffir never downloads):")
    for w in rows:
        state = "installed" if w.install_name in installed else "not installed"
        print(f"  {w.file}")
        print(f"      {w.architecture} {w.task} x{w.scale}: {w.purpose}")
        print(f"      preset {w.preset}; published: {w.published}")
        print(f"      {state} as {w.install_name}: {convert_command(w)}")
    return 0
