"""Write evaluation results: per-image CSV, per-method means (CSV + JSON), and a markdown table."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffir.io.atomic import write_text
from diffir.metrics.registry import METRICS

__all__ = ["EvalResult", "write_reports", "markdown_table"]


@dataclass
class EvalResult:
    dataset: str
    task: str
    scale: int
    methods: list[str]
    metrics: list[str]
    rows: list[dict] = field(default_factory=list)  # {"image", "method", metric: value}
    set_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> {metric: value}
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> reason
    conventions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def means(self) -> dict[str, dict[str, float]]:
        """method -> metric -> mean over images (inf PSNR of identical images is kept as inf)."""
        out: dict[str, dict[str, float]] = {}
        for method in self.methods:
            rows = [r for r in self.rows if r["method"] == method]
            out[method] = {}
            for metric in self.metrics:
                values = [r[metric] for r in rows if metric in r and r[metric] is not None]
                if values:
                    out[method][metric] = float(np.mean(values))
            out[method].update(self.set_metrics.get(method, {}))
        return out


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def markdown_table(result: EvalResult) -> str:
    means = result.means()
    cols = [m for m in result.metrics if m not in result.skipped]
    head = "| method | " + " | ".join(f"{m.upper()} {METRICS[m].arrow}" for m in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    lines = [head, sep]
    for method in result.methods:
        lines.append(f"| {method} | " + " | ".join(_fmt(m, means[method].get(m)) for m in cols) + " |")
    return "\n".join(lines)


def _markdown_document(result: EvalResult) -> str:
    n = len({r["image"] for r in result.rows})
    scale = f", ×{result.scale}" if result.scale > 1 else ""
    parts = [f"# {result.dataset}: {result.task}{scale}, {n} images", "", markdown_table(result), ""]
    if result.conventions:
        parts.append("Conventions: " + "; ".join(f"{k} = {v}" for k, v in result.conventions.items()) + ".")
        parts.append("")
    for metric in result.metrics:
        if metric not in result.skipped:
            parts.append(f"- **{metric}** ({METRICS[metric].arrow}): {METRICS[metric].convention}")
    for metric, reason in result.skipped.items():
        parts.append(f"- **{metric} skipped**: {reason}")
    parts += [f"- {note}" for note in result.notes]
    return "\n".join(parts) + "\n"


def write_reports(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in result.metrics if m not in result.skipped and METRICS[m].kind != "set"]
    paths = {
        "per_image": out_dir / "per_image.csv",
        "summary": out_dir / "summary.csv",
        "markdown": out_dir / "results.md",
        "json": out_dir / "results.json",
    }
    rows = [["image", "method", *metrics, "notes"]]
    rows += [[r["image"], r["method"], *(_csv(r.get(m)) for m in metrics), r.get("notes", "")] for r in result.rows]
    write_text(paths["per_image"], _csv_text(rows))
    means = result.means()
    all_cols = [m for m in result.metrics if m not in result.skipped]
    rows = [["method", *all_cols]]
    rows += [[method, *(_csv(means[method].get(m)) for m in all_cols)] for method in result.methods]
    write_text(paths["summary"], _csv_text(rows))
    write_text(paths["markdown"], _markdown_document(result))
    payload = {
        "dataset": result.dataset,
        "task": result.task,
        "scale": result.scale,
        "images": len({r["image"] for r in result.rows}),
        "means": means,
        "higher_is_better": {m: METRICS[m].higher_is_better for m in all_cols},
        "conventions": result.conventions,
        "skipped": result.skipped,
        "notes": result.notes,
    }
    write_text(paths["json"], json.dumps(payload, indent=2, allow_nan=True))
    return paths


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _csv(value: float | None) -> str:
    if value is None:
        return ""
    return "inf" if math.isinf(value) else f"{value:.6f}"
