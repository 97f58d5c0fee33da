"""Run a benchmark: models × sizes × paths, timed in this process (warm) or one fresh process per run.

Per model and size: parameters and MACs, then ``repeats`` rounds; each round takes one sample of the matmul peak
and then times each chosen path once, in the order fast, reference — so the paths alternate and a change of
machine load hits both alike.  In-process, each path first runs once untimed (warm-up).  ``fresh=True``: each
timed run is a new worker process (:mod:`diffir.bench.worker`).
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffir.bench.measure import PATHS, Run, make_forward, make_input, reset_memory_high_water, timed
from diffir.bench.models import (
    DEFAULT_MODELS,
    BenchModel,
    check_size,
    default_size,
    macs_at,
    parameter_count,
    parse_size,
    resolve_model,
)
from diffir.bench.peak import MatmulPeak
from diffir.errors import DiffIRError

PATH_CHOICES = {"fast": ("fast",), "reference": ("reference",), "both": PATHS}


@dataclass
class PathResult:
    """The timed runs of one path on one model and size."""

    path: str
    runs: list[Run] = field(default_factory=list)

    @property
    def ms(self) -> list[float]:
        return [r.seconds * 1e3 for r in self.runs]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.ms)

    @property
    def min_ms(self) -> float:
        return min(self.ms)

    @property
    def max_ms(self) -> float:
        return max(self.ms)

    @property
    def quartiles_ms(self) -> tuple[float, float]:
        ms = self.ms
        if len(ms) < 2:
            return ms[0], ms[0]
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
        return q1, q3

    def _median_of(self, name: str) -> float | None:
        values = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        return statistics.median(values) if values else None

    @property
    def minflt(self) -> float | None:
        """Median minor page faults per forward."""
        return self._median_of("minflt")

    @property
    def majflt(self) -> float | None:
        return self._median_of("majflt")

    @property
    def maxrss(self) -> int | None:
        """Peak RSS in bytes (max over the runs)."""
        values = [r.maxrss for r in self.runs if r.maxrss is not None]
        return max(values) if values else None

    @property
    def device_peak(self) -> int | None:
        values = [r.device_peak for r in self.runs if r.device_peak is not None]
        return max(values) if values else None


@dataclass
class Row:
    """One model at one LQ size: its accounting and the results per path."""

    model: str
    height: int
    width: int
    scale: int
    params: int
    macs: int
    results: dict[str, PathResult]
    #: What ``maxrss`` covers: "run" (each run's own process), "row" (this process over this row's runs, all
    #: paths; peak reset before the row) or "process" (this process since it started).
    rss_scope: str
    #: MACs counted on each path that ran (the formulations may differ slightly; ``macs`` is the default path's).

    @property
    def out_height(self) -> int:
        return self.height * self.scale

    @property
    def out_width(self) -> int:
        return self.width * self.scale

    @property
    def megapixels(self) -> float:
        """Output megapixels."""
        return self.out_height * self.out_width / 1e6

    def ms_per_megapixel(self, path: str) -> float:
        return self.results[path].median_ms / self.megapixels

    def gflops(self, path: str) -> float:
        """Achieved GFLOP/s: 2·MACs over the median time."""
        return 2 * self.macs / (self.results[path].median_ms / 1e3) / 1e9

    def speedup(self) -> float | None:
        """reference median / fast median (> 1: the fast path is faster), when both ran."""
        if "fast" not in self.results or "reference" not in self.results:
            return None
        return self.results["reference"].median_ms / self.results["fast"].median_ms

    def paired_speedup(self) -> float | None:
        """Median over rounds of reference / fast times (each pair measured back to back)."""
        if self.speedup() is None:
            return None
        pairs = zip(self.results["reference"].ms, self.results["fast"].ms, strict=True)
        return statistics.median(r / f for r, f in pairs)


@dataclass
class Report:
    rows: list[Row]
    peak_samples: list[float]  #: GFLOP/s of the matmul samples
    peak_size: int
    env: dict[str, Any]

    @property
    def peak_median(self) -> float:
        return statistics.median(self.peak_samples)

    @property
    def peak_best(self) -> float:
        return max(self.peak_samples)

    def peak_share(self, row: Row, path: str) -> float:
        return row.gflops(path) / self.peak_median

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            paths = {}
            for name, res in row.results.items():
                q1, q3 = res.quartiles_ms
                paths[name] = {
                    "ms_median": res.median_ms, "ms_min": res.min_ms, "ms_max": res.max_ms, "ms_q1": q1, "ms_q3": q3,
                    "ms_per_megapixel": row.ms_per_megapixel(name), "gflops": row.gflops(name),
                    "peak_share": self.peak_share(row, name),
                    "maxrss_bytes": res.maxrss,
                    "minflt_median": res.minflt, "majflt_median": res.majflt, "device_peak_bytes": res.device_peak,
                    "runs": [r.to_dict() for r in res.runs],
                }
            rows.append({
                "model": row.model, "lq": [row.height, row.width], "output": [row.out_height, row.out_width],
                "output_megapixels": row.megapixels, "params": row.params, "macs": row.macs, "rss_scope": row.rss_scope,
                "paths": paths, "speedup_reference_over_fast": row.speedup(),
                "paired_speedup_reference_over_fast": row.paired_speedup(),
            })
        return {
            **self.env,
            "peak": {"matmul_size": self.peak_size, "dtype": self.env["precision"], "gflops_median": self.peak_median,
                     "gflops_best": self.peak_best, "samples": self.peak_samples},
            "rows": rows,
        }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu" and sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def run_bench(
    models: Sequence[str | nn.Module | tuple[str, nn.Module]] | None = None,
    sizes: Sequence[str | int | tuple[int, int]] | None = None,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    path: str = "fast",
    repeats: int = 3,
    threads: int | str | None = None,
    fresh: bool = False,
    peak_size: int = 2048,
    fresh_warmup: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Benchmark stage-2 inference; see the module docstring and ``docs/benchmarks.md``.

    Args:
        models: preset names (random weights), bundled names, checkpoint paths, modules or (label, module);
            default :data:`DEFAULT_MODELS`.
        sizes: LQ sizes (``"128x96"``, 128 or (H, W)) for every model; default 128² for SR ×2/×4, 256² else.
        threads: ``"auto"``, a count, or None (leave torch's setting); fresh workers use the count in effect here.
        fresh: one new Python process per timed run (cold forward, as a user's command runs it).
        fresh_warmup: before a model's first fresh run, one untimed worker per path at the first size: the code
            and weights files are then in the OS page cache, and the memory the runs need has been touched once
            (on a virtual machine the host backs a guest page only at its first use: measured here, the first
            timed run of a row took 2.5× the others without this).
    """
    from diffir import __version__
    from diffir.pipelines.precision import resolve_device, resolve_precision
    from diffir.runtime import configure_threads, keep_freed_memory

    if path not in PATH_CHOICES:
        raise DiffIRError(f"--path {path!r}: use fast, reference or both")
    if repeats < 1:
        raise DiffIRError(f"--repeats {repeats}: use 1 or more")
    paths = PATH_CHOICES[path]
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    kept = keep_freed_memory()  # the process setup of the command line (a no-op after the first call)
    n_threads = configure_threads(threads)
    say = progress or (lambda _msg: None)

    # Everything a user can get wrong is checked before the first long measurement.
    benches = [resolve_model(spec) for spec in (DEFAULT_MODELS if models is None else models)]
    given = None if sizes is None else [parse_size(s) for s in sizes]
    plan: list[tuple[BenchModel, list[tuple[int, int]]]] = []
    for bench in benches:
        assert bench.descriptor is not None
        model_sizes = given or [default_size(bench.descriptor)]
        for size in model_sizes:
            check_size(bench.label, bench.descriptor, size)
        plan.append((bench, model_sizes))

    peak = MatmulPeak(dev, dtype, peak_size)
    rows: list[Row] = []
    worker_kept: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="diffir-bench-") as tmp:
        for index, (bench, model_sizes) in enumerate(plan):
            model = bench.load()
            params = parameter_count(model)
            macs: dict[tuple[int, int], int] = {}
            for h, w in model_sizes:
                say(f"{bench.label} {h}x{w}: counting MACs")
                macs[h, w] = macs_at(model, h, w)  # the papers' count, as `diffir info`; the same for both paths
            source = bench.source
            if fresh and source is None:
                from diffir.io.checkpoint import save_model

                source = {"model": str(save_model(model, Path(tmp) / f"model{index}.safetensors"))}
            model = model.to(dev)
            descriptor = bench.descriptor
            assert descriptor is not None
            warmed = not fresh_warmup
            for h, w in model_sizes:
                results = {p: PathResult(p) for p in paths}
                if fresh:
                    assert source is not None
                    base = {"source": source, "device": str(dev), "precision": precision, "threads": n_threads,
                            "seed": 0}
                    if not warmed:
                        for p in paths:
                            say(f"{bench.label} {h}x{w} {p}: warm-up worker process")
                            run_worker_checked({**base, "height": h, "width": w, "path": p}, n_threads)
                        warmed = True
                    scope = "run"
                    for r in range(repeats):
                        peak.sample()
                        for p in paths:
                            data = run_worker_checked({**base, "height": h, "width": w, "path": p}, n_threads)
                            if p != "reference":
                                worker_kept.append(bool(data.get("keep_freed_memory")))
                            results[p].runs.append(Run.from_dict(data))
                            say(f"{bench.label} {h}x{w} {p} {r + 1}/{repeats}: {data['seconds'] * 1e3:.0f} ms")
                else:
                    scope = "row" if reset_memory_high_water() else "process"
                    lq = make_input(model, h, w, dev)
                    forwards = {p: make_forward(model, lq, dev, dtype, p) for p in paths}
                    for p in paths:
                        say(f"{bench.label} {h}x{w} {p}: warm-up")
                        forwards[p]()
                    for r in range(repeats):
                        peak.sample()
                        for p in paths:
                            run = timed(forwards[p], dev)
                            results[p].runs.append(run)
                            say(f"{bench.label} {h}x{w} {p} {r + 1}/{repeats}: {run.seconds * 1e3:.0f} ms")
                    del lq, forwards
                rows.append(Row(bench.label, h, w, descriptor.scale, params, macs[h, w], results, scope))
            del model
            gc.collect()

    env = {
        "diffir": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": str(dev), "device_name": _device_name(dev), "precision": precision, "threads": n_threads,
        "mode": "fresh" if fresh else "in-process", "repeats": repeats, "paths": list(paths),
        "keep_freed_memory": all(worker_kept) if fresh and worker_kept else kept,
    }
    return Report(rows, list(peak.samples), peak_size, env)


def run_worker_checked(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    from diffir.bench.worker import run_worker

    data = run_worker(spec)
    if data.get("threads") != threads:
        raise DiffIRError(f"benchmark worker ran with {data.get('threads')} threads instead of {threads}")
    return data
