"""Option types and options shared by several sub-commands (one parser per kind of value)."""

from __future__ import annotations

import argparse


def tile_size(value: str) -> int | str:
    """``--tile``: a size in input pixels, 0 (whole image) or auto."""
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in pixels, 0 or 'auto', got {value!r}") from None
    if size < 0:
        raise argparse.ArgumentTypeError("tile size must be >= 0")
    return size


def thread_count(value: str) -> int | str:
    """``--threads``: a positive count or auto."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads or 'auto', got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("threads must be >= 1")
    return count


THREADS_HELP = ("CPU threads: a number, or auto (the fastest of 1, half and all cores, measured at start; "
                "OMP_NUM_THREADS wins). On a machine busy with other work, 1 is often several times faster")


def add_threads(p: argparse.ArgumentParser, default: str | None, extra: str = "") -> None:
    p.add_argument("--threads", type=thread_count, default=default, metavar="N|auto",
                   help=f"{THREADS_HELP}{extra}")
