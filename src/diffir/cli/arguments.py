"""Option types and options shared by several sub-commands (one parser per kind of value)."""

from __future__ import annotations

import argparse


def _int_or_auto(value: str, minimum: int, expected: str) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected} or 'auto', got {value!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"{expected} must be >= {minimum}")
    return number


def tile_size(value: str) -> int | str:
    """``--tile``: a size in input pixels, 0 (whole image) or auto."""
    return _int_or_auto(value, 0, "a tile size in pixels (0 = whole image)")


def thread_count(value: str) -> int | str:
    """``--threads``: a positive count or auto."""
    return _int_or_auto(value, 1, "a number of threads")


THREADS_HELP = ("CPU threads: a number, or auto (the fastest of 1, half and all cores, measured at start; "
                "OMP_NUM_THREADS wins). On a machine busy with other work, 1 is often several times faster")


def add_threads(p: argparse.ArgumentParser, default: str | None, extra: str = "") -> None:
    p.add_argument("--threads", type=thread_count, default=default, metavar="N|auto",
                   help=f"{THREADS_HELP}{extra}")
