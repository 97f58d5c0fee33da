"""``diffir`` command line: one entry point, one module per sub-command.

Each sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``.  Sub-command modules keep
heavy imports (torch, models) inside ``run`` so that ``diffir -h`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from typing import NoReturn

# name -> (module, one-line help).  Order is the order shown in ``diffir -h``.
COMMANDS: dict[str, tuple[str, str]] = {
    "restore": ("diffir.cli.restore", "restore images (SR, real-world SR, deblurring, inpainting)"),
    "train": ("diffir.cli.train", "train DiffIR, HI-Diff (S1 -> S2 -> GAN), DiffBIR (cleaner, ControlNet) from YAML"),
    "eval": ("diffir.cli.evaluate", "evaluate a model on a benchmark folder (PSNR, SSIM, ...)"),
    "convert": ("diffir.cli.convert", "convert a checkpoint (official .pth/.ckpt <-> safetensors)"),
    "info": ("diffir.cli.info", "show the inferred configuration, parameters and MACs of a model"),
    "export": ("diffir.cli.export", "export a stage-2 model's whole inference (prior + sampler + network) to ONNX"),
    "list": ("diffir.cli.list_models", "list the named model presets"),
    "serve": ("diffir.cli.serve", "a local web app: upload, restore, paint masks, compare and download"),
    "bench": ("diffir.cli.bench", "time models per size: ms/image, ms/MP, GFLOP/s vs matmul peak, memory"),
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (the usage block it prints by default is several)."""

    def error(self, message: str) -> NoReturn:
        from diffir.errors import one_line

        self.exit(2, f"diffir: error: {one_line(f'{self.prog}: {message}')} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    from diffir import __version__

    parser = _OneLineParser(prog="diffir", description="Efficient diffusion-based image restoration.")
    parser.add_argument("--version", action="version", version=f"diffir {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # sub-command not available in this build
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from diffir.errors import DiffIRError, describe_os_error, one_line, print_warning

    parser = build_parser()
    args = parser.parse_args(argv)
    # Python's default warning format is two lines with our source path; users get one line.
    warnings.showwarning = print_warning
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from diffir.runtime import keep_freed_memory

    keep_freed_memory()  # one process per command: keep freed activations mapped (×1.8 fewer page faults)
    try:
        return int(args._run(args) or 0)
    except DiffIRError as exc:
        print(f"diffir: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `diffir list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("diffir: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # permission, full disk, ... on a file no command-specific check reached first
        print(f"diffir: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("diffir: error: out of memory; use a smaller --tile (restore/eval) or batch/patch size (train)",
              file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: a bug must still end in one line, not a traceback
        if os.environ.get("DIFFIR_DEBUG"):
            raise
        print(f"diffir: internal error: {one_line(f'{type(exc).__name__}: {exc}')} (a bug in diffir: please report "
              "it with the command line; DIFFIR_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
