"""Data-parallel training on torch's own engine (``torchrun``): process group, gradient all-reduce, rank 0 I/O.

Gradients are averaged with one bucketed all-reduce after the (accumulated) backward pass — the same maths as
``DistributedDataParallel``, but it works unchanged for every code path of a DiffIR step (S2 warm-up runs only
the diffusion, the GAN stage runs G and D separately, the teacher is frozen), with no unused-parameter
bookkeeping.  The backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from diffir.runtime.job import Shard


@dataclass(frozen=True)
class DistContext(Shard):
    """This process's place in the job (:class:`~diffir.runtime.job.Shard`) and the device its collectives use."""

    #: where small collective tensors live (NCCL cannot reduce CPU tensors)
    device: torch.device = torch.device("cpu")

    @classmethod
    def join(cls, device: str = "auto") -> DistContext:
        """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise single process."""
        place = Shard.from_env()
        if not place.enabled:
            return cls()
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
        if not dist.is_initialized():
            backend = "nccl" if use_cuda else "gloo"
            if use_cuda:
                torch.cuda.set_device(place.local_rank)
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
        return cls(rank=place.rank, world_size=place.world_size, local_rank=place.local_rank,
                   local_world_size=place.local_world_size,
                   device=torch.device("cuda", place.local_rank) if use_cuda else torch.device("cpu"))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_grads(self, params: Iterable[nn.Parameter]) -> None:
        """Average gradients over processes (missing gradients count as zeros)."""
        if not self.enabled:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank start from rank 0's weights (and buffers)."""
        if not self.enabled:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (keeps collective decisions in step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
