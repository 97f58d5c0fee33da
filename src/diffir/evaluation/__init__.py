"""Benchmark evaluation: ``diffir eval`` (paired or GT-only folders, baselines, tables, grids) and plots.

    from diffir.evaluation import evaluate, EvalOptions
    result = evaluate("data/sr/Set5", "results/set5", model="diffir_sr_x4.safetensors",
                      options=EvalOptions(degrade="bicubic_x4", metrics=["psnr", "ssim"]))
    result.means()["bicubic"]["psnr"]
"""

from __future__ import annotations

from diffir.evaluation.report import EvalResult, markdown_table
from diffir.evaluation.runner import EvalOptions, default_metrics, evaluate

__all__ = ["EvalOptions", "EvalResult", "default_metrics", "evaluate", "markdown_table"]
