"""Image-quality metrics with the field's conventions (BasicSR PSNR/SSIM, MATLAB NIQE, LPIPS, DISTS, FID).

Quick use::

    from diffir.metrics import calculate_psnr, calculate_ssim
    psnr = calculate_psnr(sr, hr, crop_border=4, test_y_channel=True)   # uint8 HWC RGB arrays

    from diffir.metrics import build_metric, METRICS
    lpips = build_metric("lpips", weights={"alexnet": "alexnet-owt-7be5be79.pth"})
    METRICS["lpips"].higher_is_better  # False

Heavy parts (torch backbones) are imported only by ``build_metric`` / their own modules.
"""

from __future__ import annotations

from diffir.metrics.color import rgb2ycbcr, rgb_to_y
from diffir.metrics.niqe import calculate_niqe
from diffir.metrics.psnr_ssim import calculate_psnr, calculate_psnr_pt, calculate_ssim, calculate_ssim_pt
from diffir.metrics.registry import METRICS, MetricSpec, build_metric, describe, list_metrics
from diffir.metrics.weights import MissingWeightsError

__all__ = [
    "METRICS",
    "MetricSpec",
    "MissingWeightsError",
    "build_metric",
    "calculate_niqe",
    "calculate_psnr",
    "calculate_psnr_pt",
    "calculate_ssim",
    "calculate_ssim_pt",
    "describe",
    "list_metrics",
    "rgb2ycbcr",
    "rgb_to_y",
]
