"""Thread count chosen by measurement.

PyTorch uses one thread per core.  On a machine whose cores are busy with other work that is the slowest
choice (measured here: one thread ×3 faster than two on a loaded 2-core machine), and on an idle one it is the
fastest.  ``auto`` therefore first leaves out the cores other programs keep busy right now (Linux: read from
``/proc/stat`` over a fifth of a second; work at a lower priority, ``nice``, does not count: it yields), then
times a short piece of typical work (a 3×3 convolution and a matrix product, the two kinds of kernel a restore
spends its time in) with each remaining count, alternating, and keeps the fastest.  The timing alone misses
a busy core: a 10-ms burst of two threads still finishes quickly beside another program, while a long run of
them waits at every synchronisation (measured: 12.1 s with two threads against 7.8 s with one for the same
restore).  An explicit count, or ``OMP_NUM_THREADS`` in the environment, is used as given.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from diffir.errors import DiffIRError

_chosen: int | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores from /proc/stat; busy excludes idle, iowait and niced work."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    user, nice, system, idle, iowait = fields[:5]
    rest = sum(fields[5:8])  # irq, softirq, steal
    return user + system + rest, user + nice + system + idle + iowait + rest


def busy_cores(window: float = 0.2) -> float:
    """How many cores other programs keep busy now (0.0 where it cannot be read).  Our own process is idle
    while this runs, so everything counted is someone else's."""
    first = _cpu_times()
    if first is None:
        return 0.0
    time.sleep(window)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return 0.0
    return available_cores() * (second[0] - first[0]) / (second[1] - first[1])


def _workload() -> Callable[[], object]:
    """A 3×3 convolution and a pixels × channels matrix product on a 64×64 map of 48 channels (~10 ms)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 64, 64, generator=g)
    w = torch.randn(48, 48, 3, 3, generator=g)
    m = torch.randn(48, 144, generator=g)
    return lambda: (torch.nn.functional.conv2d(x, w, padding=1), x.flatten(2)[0].T @ m)


def choose_threads(candidates: list[int] | None = None, rounds: int = 5) -> int:
    """The fastest thread count for a short typical workload on this machine, now (cached per process)."""
    global _chosen
    default = candidates is None
    if default and _chosen is not None:
        return _chosen
    cores = available_cores()
    if candidates is None:
        free = max(1, cores - round(busy_cores()))  # leave the cores other programs use to them
        candidates = sorted({n for n in (1, max(1, cores // 2), cores) if n <= free})
    if len(candidates) == 1:
        if default:
            _chosen = candidates[0]
        return candidates[0]
    work = _workload()
    before = torch.get_num_threads()
    times: dict[int, list[float]] = {n: [] for n in candidates}
    with torch.inference_mode():
        for _ in range(rounds):
            for n in candidates:
                torch.set_num_threads(n)
                work()
                t0 = time.perf_counter()
                work()
                times[n].append(time.perf_counter() - t0)
    torch.set_num_threads(before)
    best = min(candidates, key=lambda n: (statistics.median(times[n]), n))
    if default:
        _chosen = best
    return best


def configure_threads(threads: int | str | None = "auto") -> int:
    """Set torch's intra-op thread count: an int, ``"auto"`` (measured; ``OMP_NUM_THREADS`` wins) or None
    (leave it).  Returns the count in effect."""
    if threads is None:
        return torch.get_num_threads()
    if isinstance(threads, str):
        if threads.strip().lower() != "auto":
            try:
                threads = int(threads)
            except ValueError:
                raise DiffIRError(f"--threads {threads!r}: use a positive number or auto") from None
        elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
            threads = int(os.environ["OMP_NUM_THREADS"])
        else:
            threads = choose_threads()
    if not isinstance(threads, int) or threads < 1:
        raise DiffIRError(f"--threads {threads!r}: use a positive number or auto")
    torch.set_num_threads(threads)
    return threads
