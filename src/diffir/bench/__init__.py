"""``diffir bench``: speed, work and memory of stage-2 inference, per model and size, fast vs reference path.

    >>> from diffir.bench import run_bench, format_table
    >>> report = run_bench(["diffir_sr_x4_s2"], ["128x128"], path="both", repeats=3, fresh=True)
    >>> print(format_table(report))

Modules: :mod:`~diffir.bench.measure` (what is timed, process counters), :mod:`~diffir.bench.peak` (matmul
peak), :mod:`~diffir.bench.models` (specs, sizes, MACs), :mod:`~diffir.bench.worker` (``--fresh`` processes),
:mod:`~diffir.bench.suite` (the run), :mod:`~diffir.bench.table` (text and JSON).  Columns and how to read them:
``docs/benchmarks.md``.
"""

from diffir.bench.models import DEFAULT_MODELS
from diffir.bench.peak import MatmulPeak
from diffir.bench.suite import PathResult, Report, Row, run_bench
from diffir.bench.table import format_table, write_json

__all__ = ["DEFAULT_MODELS", "MatmulPeak", "PathResult", "Report", "Row", "format_table", "run_bench", "write_json"]
