"""Plots (the ``[plots]`` extra): training curves and PSNR vs Multi-Adds with the paper's points.

Training logs are read from a run folder: ``log.jsonl`` (one JSON object per line with ``iter`` and scalar
fields, written by ``diffir train``), ``val.jsonl`` (validation, plotted as ``val/<name>``) and, if the
``tensorboard`` package is installed, TensorBoard event files (``events.out.tfevents.*``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffir.errors import ConfigError
from diffir.install import pip_extra
from diffir.io.atomic import atomic_path

__all__ = ["PaperPoint", "PAPER_REALSR_POINTS", "read_training_log", "plot_training_curves", "plot_psnr_vs_macs"]

Series = dict[str, list[tuple[int, float]]]
_NOT_CURVES = {"iter", "eta_s", "best"}


@dataclass(frozen=True)
class PaperPoint:
    method: str
    tmacs: float  # Multi-Adds in T (10^12) for a 256x256 LR input
    psnr: float
    benchmark: str
    diffusion: bool = False


# DiffIR supplementary Table 1: x4 real-world SR, "Mult-Adds (T) computed based on an LR size of 256x256".
PAPER_REALSR_POINTS: tuple[PaperPoint, ...] = tuple(
    PaperPoint(m, t, p, bench, diff)
    for m, t, set_psnr, ntire_psnr, diff in (
        ("BSRGAN", 1.18, 26.90, 26.75, False),
        ("Real-ESRGAN", 1.18, 26.07, 26.40, False),
        ("KDSR_S-GAN", 0.86, 27.18, 27.12, False),
        ("LDM", 37.25, 26.37, 25.68, True),
        ("DiffIR_S2", 0.74, 27.65, 27.31, True),
    )
    for bench, p in (("RealSRSet", set_psnr), ("NTIRE2020-T1", ntire_psnr))
)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(f"plots need matplotlib: {pip_extra('plots')}") from exc
    return plt


def _read_jsonl(path: Path, prefix: str, series: Series) -> None:
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written while we read
        it = record.get("iter") if isinstance(record, dict) else None
        if not isinstance(it, (int, float)) or "event" in record:  # events (e.g. rollbacks) are not curves
            continue
        for key, value in record.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key not in _NOT_CURVES and numeric and math.isfinite(value):
                series[prefix + key].append((int(it), float(value)))


def _read_tensorboard(run: Path, series: Series) -> None:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    for events in sorted(run.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            series[f"tb/{tag}"] += [(e.step, e.value) for e in acc.Scalars(tag)]


def read_training_log(run: str | Path) -> Series:
    """``{name: [(iter, value), ...]}`` of every scalar logged by a run (sorted by iteration).

    ``log.jsonl``/``val.jsonl`` are the primary source; TensorBoard event files are read only for runs that
    have neither (``diffir train`` writes the same scalars to both, and plotting them twice helps nobody).
    """
    run = Path(run)
    series: Series = defaultdict(list)
    if (run / "log.jsonl").is_file():
        _read_jsonl(run / "log.jsonl", "", series)
    if (run / "val.jsonl").is_file():
        _read_jsonl(run / "val.jsonl", "val/", series)
    if not series:
        _read_tensorboard(run, series)
    if not series:
        raise ConfigError(f"{run}: no log.jsonl, val.jsonl or TensorBoard scalars found")
    return {k: sorted(v) for k, v in series.items()}


def plot_training_curves(runs: list[str | Path], out_dir: str | Path, names: list[str] | None = None) -> list[Path]:
    """One figure with a panel per scalar (runs overlaid); returns the written PNG path(s)."""
    plt = _pyplot()
    logs = {Path(r).name: read_training_log(r) for r in runs}
    found = {k for log in logs.values() for k in log if names is None or k in names}
    if not found:
        raise ConfigError(f"none of the requested curves {names} is in the logs of {', '.join(logs)}")
    # validation first, then losses, then the rest (learning rates, speed)
    keys = sorted(found, key=lambda k: (not k.startswith("val/"), "loss" not in k and not k.startswith("l_"), k))
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for colour, (run, log) in enumerate(logs.items()):  # one colour per run in every panel
            if key in log:
                xs, ys = zip(*log[key], strict=True)
                marker = "o" if len(xs) <= 20 else None  # a single validation point must stay visible
                ax.plot(xs, ys, label=run, lw=1.2, marker=marker, ms=3, color=f"C{colour % 10}")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        values = [v for log in logs.values() for _, v in log.get(key, [])]
        if "loss" in key or key.startswith("l_"):
            ax.set_yscale("log" if values and min(values) > 0 else "linear")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if len(logs) > 1:
        fig.legend(handles=[plt.Line2D([], [], color=f"C{i % 10}", label=run) for i, run in enumerate(logs)],
                   loc="upper right", fontsize=7)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97) if len(logs) > 1 else None)  # room for the figure legend
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training_curves.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return [path]


def model_tmacs_at_256(model: Any) -> float:
    """Multi-Adds (T) of one S2 forward on a 256x256 LR input, counted at 64x64 and scaled by 16.

    Every DiffIR layer (convolutions, channel-wise "transposed" attention) is linear in the pixel count, so
    the scaling is exact up to the size-independent CPEN/denoiser MLPs; it keeps the count cheap on CPU.
    """
    from diffir.pipelines.model_source import load_inference_model
    from diffir.profile import count_macs

    net = load_inference_model(model)
    return count_macs(net, 64) * 16 / 1e12


def plot_psnr_vs_macs(
    result: Any,
    model: Any,
    out_dir: str | Path,
    points: tuple[PaperPoint, ...] = PAPER_REALSR_POINTS,
    label: str | None = None,
) -> Path:
    """Scatter of the paper's published (Multi-Adds, PSNR) points plus this run's model and mean PSNR."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    handles = []
    for bench, marker in (("RealSRSet", "o"), ("NTIRE2020-T1", "s")):
        sel = [p for p in points if p.benchmark == bench]
        ax.scatter([p.tmacs for p in sel], [p.psnr for p in sel], marker=marker,
                   c=["tab:red" if p.diffusion else "tab:blue" for p in sel])  # fmt: skip
        handles.append(plt.Line2D([], [], ls="", marker=marker, color="grey", label=f"paper, {bench}"))
        for p in sel:
            ax.annotate(p.method, (p.tmacs, p.psnr), fontsize=7, xytext=(4, 2), textcoords="offset points")
    handles += [plt.Line2D([], [], ls="", marker="o", color=c, label=t)
                for c, t in (("tab:blue", "GAN-based (paper)"), ("tab:red", "diffusion-based (paper)"))]  # fmt: skip
    if result is not None and model is not None:
        psnr = result.means()[result.methods[-1]].get("psnr")
        if psnr is not None and math.isfinite(psnr):
            tmacs = model_tmacs_at_256(model)
            channel = "Y" if result.conventions.get("channel", "").startswith("Y") else "RGB"
            n_images = len({r["image"] for r in result.rows})
            name = label or f"{result.methods[-1]} on {result.dataset} ({channel}, {n_images} images)"
            handles.append(ax.scatter([tmacs], [psnr], marker="*", s=160, c="black", label=name))
    ax.set_xscale("log")
    ax.set_xlabel("Multi-Adds (T) at 256x256 LR input (log scale)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("x4 real-world SR: PSNR vs compute (DiffIR supp. Table 1)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize=7)
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "psnr_vs_macs.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
