"""Where this process sits in a ``torchrun`` job: rank, world size, local rank, processes on this machine.

One reader of torchrun's variables for restoring (:mod:`diffir.pipelines.sharding`) and training
(:mod:`diffir.train.distributed`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from diffir.errors import DiffIRError


@dataclass(frozen=True)
class Shard:
    """This process's place in a ``torchrun`` job (``rank`` 0 of ``world_size`` 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    #: processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``): they share its cores
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        """``" [rank 1/4]"`` in a job of several processes, ``""`` alone (for log lines)."""
        return f" [rank {self.rank}/{self.world_size}]" if self.enabled else ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Shard:
        """From torchrun's variables; a single process when ``WORLD_SIZE`` is unset or 1."""
        env = os.environ if environ is None else environ

        def number(name: str, default: int | None = None) -> int:
            value = env.get(name, "").strip()
            if not value:
                if default is None:
                    raise DiffIRError(f"WORLD_SIZE is set but {name} is not; start the processes with torchrun")
                return default
            try:
                return int(value)
            except ValueError:
                raise DiffIRError(f"{name}={value!r} in the environment is not a number") from None

        world = number("WORLD_SIZE", 1)
        if world <= 1:
            return cls()
        rank = number("RANK")
        if not 0 <= rank < world:
            raise DiffIRError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
        local_rank = number("LOCAL_RANK", 0)
        local_world = number("LOCAL_WORLD_SIZE", world)
        return cls(rank=rank, world_size=world, local_rank=local_rank, local_world_size=max(1, local_world))
