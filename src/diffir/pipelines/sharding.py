"""One file list restored by several processes (``torchrun``): which process am I, which files are mine, which
device and how many threads I use, and one summary for the whole job.

``torchrun --nproc_per_node N -m diffir restore ...`` starts N copies of the same command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment.
Every process lists the same inputs (sorted) and keeps its share (:func:`shard`); nothing is exchanged while
restoring.  At the end the per-process counts are gathered once (:func:`gather_counts`) and rank 0 prints the
summary.  Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing here changes anything.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

from diffir.runtime.job import Shard

T = TypeVar("T")

#: How long a finished process waits for the others at the final gather.  It must exceed the largest difference
#: between the processes' run times (one share may hold the large images), so it is long; a process that dies
#: does not make the others wait this long, torchrun stops them as soon as one worker exits with an error.
GATHER_TIMEOUT = datetime.timedelta(days=7)
_own_group = False  # the process group was joined by gather_counts (and is left by finish)


def shard(items: Sequence[T], rank: int, world_size: int, key: Callable[[T], Hashable] | None = None) -> list[T]:
    """Rank ``rank``'s share of ``items``: items ``rank``, ``rank + world_size``, ... (round robin), in order.

    With ``key``, items with equal keys form one group that goes to one rank, and the groups (in order of first
    appearance) are dealt round robin: with distinct keys this is exactly the plain round robin.  Every item is
    in exactly one share, and the shares differ in size by at most one group.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world size {world_size}")
    if key is None:
        return list(items[rank::world_size])
    group: dict[Hashable, int] = {}
    mine = []
    for item in items:
        index = group.setdefault(key(item), len(group))
        if index % world_size == rank:
            mine.append(item)
    return mine


def rank_device(device: str, shard_: Shard) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` when the user asked for ``auto``/``cuda`` and CUDA is
    there (several processes per GPU when there are more processes than GPUs: ``LOCAL_RANK`` modulo their
    number); any other choice (``cpu``, ``mps``, an explicit ``cuda:N``) is kept as given."""
    if not shard_.enabled or device.strip().lower() not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    index = shard_.local_rank % torch.cuda.device_count()
    # Make it the current device too: otherwise every process would also create a context on cuda:0.
    torch.cuda.set_device(index)
    return f"cuda:{index}"


def fair_threads(shard_: Shard, environ: Mapping[str, str] | None = None) -> int | None:
    """CPU threads for this process when the user chose none: the machine's cores divided by the processes
    on it (at least 1); ``None`` (leave torch's count) when running alone or when ``OMP_NUM_THREADS`` is set.

    torchrun itself sets ``OMP_NUM_THREADS=1`` when it is unset, which is indistinguishable from a user's 1:
    a value of 1 is therefore taken as torchrun's default; ``--threads 1`` forces one thread."""
    if not shard_.enabled:
        return None
    env = os.environ if environ is None else environ
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp and omp != "1":
        return None
    from diffir.runtime.threads import available_cores

    return max(1, available_cores() // shard_.local_world_size)


def gather_counts(shard_: Shard, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every process's ``counts`` (a small picklable dict), in rank order, on every process; call
    :func:`finish` on every process afterwards.

    Why a gloo process group and not files: it needs no folder shared by all machines (outputs may go to local
    disks), leaves no files behind and cannot pick up a stale file of an earlier run, and torchrun already
    provides its rendezvous (``MASTER_ADDR``/``MASTER_PORT``).  It is joined only here, after the work: nothing
    waits on the network while restoring, and a broken network costs the summary, never the outputs.  Gloo
    works for CPU and GPU jobs alike (the counts are CPU objects).  Every process reaches this call even when
    its files fail (per-file errors are caught), so nobody waits for a process that already gave up.  The price:
    processes that cannot reach each other wait here up to :data:`GATHER_TIMEOUT` (a gather through files would
    need a timeout of its own just the same, plus a shared folder); one whose joining fails with an error exits
    non-zero, and torchrun then stops the others.
    """
    global _own_group
    if not shard_.enabled:
        return [counts]
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=shard_.rank, world_size=shard_.world_size, timeout=GATHER_TIMEOUT)
        _own_group = True
    gathered: list[Any] = [None] * shard_.world_size
    dist.all_gather_object(gathered, counts)
    return gathered


def finish(shard_: Shard) -> None:
    """Wait until every process got here, then leave the process group joined by :func:`gather_counts`.

    Called after rank 0 printed the summary: a process exiting with status 1 makes torchrun stop the others,
    which must not happen to rank 0 before its summary is out."""
    global _own_group
    if not shard_.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        if _own_group:
            dist.destroy_process_group()
            _own_group = False
