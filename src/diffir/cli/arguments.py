"""Options shared by several sub-commands; the value parsers themselves are in :mod:`diffir.option_values`."""

from __future__ import annotations

import argparse

from diffir.option_values import thread_count

THREADS_HELP = ("CPU threads: a number, or auto (the fastest of 1, half and all cores, measured at start; "
                "OMP_NUM_THREADS wins). On a machine busy with other work, 1 is often several times faster")


def add_threads(p: argparse.ArgumentParser, default: str | None, extra: str = "") -> None:
    p.add_argument("--threads", type=thread_count, default=default, metavar="N|auto",
                   help=f"{THREADS_HELP}{extra}")
