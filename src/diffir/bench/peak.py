"""This machine's matrix-product peak, measured in the same run as the models.

A square ``n × n`` matmul (default 2048², 17.2 GFLOP) in the benchmark's precision, with the benchmark's thread
count, is the best case for the BLAS the convolutions and attention also run on; a model's achieved GFLOP/s
divided by it says how far from the hardware's practical limit the network runs.  Samples are taken between
the timed forwards (one per round), so that a change of machine load hits the peak and the models alike; the
share of peak uses the median sample.
"""

from __future__ import annotations

import statistics
import time

import torch

from diffir.bench.measure import synchronize


class MatmulPeak:
    """Samples of a large matmul's GFLOP/s (``2 n³ / time``)."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048) -> None:
        if size < 1:
            raise ValueError(f"peak matmul size must be >= 1, got {size}")
        self.device = device
        self.dtype = dtype
        self.size = size
        self.samples: list[float] = []
        self._generator = torch.Generator().manual_seed(0)
        self._once()  # warm-up: BLAS initialisation, thread pool start

    def _once(self) -> float:
        n = self.size
        # Operands are allocated per sample and freed after it, so that an in-process benchmark's peak RSS does
        # not carry them (they reuse the heap the forwards freed).
        a = torch.randn(n, n, generator=self._generator).to(self.device, self.dtype)
        b = torch.randn(n, n, generator=self._generator).to(self.device, self.dtype)
        with torch.inference_mode():
            synchronize(self.device)
            t0 = time.perf_counter()
            c = torch.mm(a, b)
            synchronize(self.device)
            seconds = time.perf_counter() - t0
        del a, b, c
        return 2 * n**3 / seconds / 1e9

    def sample(self) -> float:
        """One measured sample (GFLOP/s), recorded."""
        gflops = self._once()
        self.samples.append(gflops)
        return gflops

    @property
    def median(self) -> float:
        if not self.samples:
            self.sample()
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        if not self.samples:
            self.sample()
        return max(self.samples)
