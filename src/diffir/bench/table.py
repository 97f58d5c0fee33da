"""The benchmark report as an aligned text table and as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from diffir.bench.suite import Report

#: Column headers, in order (the CUDA memory and speed-up columns only appear when they apply).
COLUMNS = ("model", "LQ", "output", "path", "params", "GMACs", "ms/img", "min-max ms", "ms/MP", "GFLOP/s",
           "% peak", "RSS MiB", "minflt")
GPU_COLUMN = "GPU MiB"
SPEEDUP_COLUMN = "ref/fast"
_LEFT = {"model", "LQ", "output", "path"}


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _count(value: float) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.2f}G"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _gmacs(macs: int) -> str:
    g = macs / 1e9
    return f"{g:.1f}" if g >= 10 else f"{g:.3g}"


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Headers and cells (strings) of the table."""
    gpu = any(res.device_peak is not None for row in report.rows for res in row.results.values())
    both = any(row.speedup() is not None for row in report.rows)
    headers = list(COLUMNS) + ([GPU_COLUMN] if gpu else []) + ([SPEEDUP_COLUMN] if both else [])
    cells: list[list[str]] = []
    for row in report.rows:
        for i, (name, res) in enumerate(row.results.items()):
            first = i == 0
            line = [
                row.model if first else "",
                f"{row.height}x{row.width}" if first else "",
                f"{row.out_height}x{row.out_width}" if first else "",
                name,
                _count(row.params) if first else "",
                _gmacs(row.macs) if first else "",
                _ms(res.median_ms),
                f"{_ms(res.min_ms)}-{_ms(res.max_ms)}",
                _ms(row.ms_per_megapixel(name)),
                f"{row.gflops(name):.1f}",
                f"{100 * report.peak_share(row, name):.1f}",
                _mib(res.maxrss),
                "n/a" if res.minflt is None else _count(res.minflt),
            ]
            if gpu:
                line.append(_mib(res.device_peak))
            if both:
                ratio = row.speedup()
                line.append(f"{ratio:.2f}x" if name == "fast" and ratio is not None else "")
            cells.append(line)
    return headers, cells


def format_table(report: Report) -> str:
    """Header lines, the aligned table and the notes that say what each number covers."""
    env = report.env
    kept = "freed memory kept (keep_freed_memory)" if env["keep_freed_memory"] else "glibc malloc defaults"
    if env["mode"] == "fresh" and "reference" in env["paths"]:
        kept += " on the fast path, glibc malloc defaults on the reference path (as the official code runs)"
    threads = f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}"
    mode = ("fresh Python process per timed run (cold first forward)" if env["mode"] == "fresh"
            else "in this process after one warm-up run per path")
    order = "paths alternating fast, reference" if len(env["paths"]) > 1 else f"{env['paths'][0]} path"
    out = [
        f"diffir bench: diffir {env['diffir']}, torch {env['torch']}, {env['device']} ({env['device_name']}), "
        f"{env['precision']}, {threads}, {kept}",
        f"timing: {mode}; {order}; median of {env['repeats']}",
        f"peak: {env['precision']} matmul {report.peak_size}x{report.peak_size}: {report.peak_median:.1f} GFLOP/s "
        f"(median of {len(report.peak_samples)} samples between runs; best {report.peak_best:.1f})",
        "",
    ]
    headers, cells = table_rows(report)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def fmt(values: list[str]) -> str:
        parts = [v.ljust(w) if h in _LEFT else v.rjust(w) for v, w, h in zip(values, widths, headers, strict=True)]
        return "  ".join(parts).rstrip()

    out.append(fmt(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt(c) for c in cells)
    out.append("")
    scopes = {row.rss_scope for row in report.rows}
    if scopes == {"run"}:
        rss = "RSS: ru_maxrss of each run's own process (torch, weights, activations), max over runs"
    elif scopes == {"row"}:
        rss = "RSS: this process's peak over the row's runs, all paths together (per-run processes: --fresh)"
    else:
        rss = "RSS: this process's peak since it started (the peak could not be reset between rows)"
    notes = [
        "ms/img: median forward (condition + prior + network) per LQ image; ms/MP: per output megapixel",
        "GFLOP/s: 2 x MACs / median time; % peak: of the matmul peak above",
        rss,
        "minflt: minor page faults of the process during the forward (median)",
    ]
    if any(row.speedup() is not None for row in report.rows):
        notes.append("ref/fast: reference median / fast median (above 1: the fast path is faster)")
    out.extend(notes)
    return "\n".join(out)


def write_json(report: Report, path: str | os.PathLike) -> Path:
    from diffir.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path
