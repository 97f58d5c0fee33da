"""Metric descriptors: name, direction, what it needs, and the exact convention behind the number.

``build_metric(name, ...)`` returns a callable on uint8 ``HWC`` RGB arrays:

* full-reference metrics: ``metric(restored, gt) -> float``;
* no-reference metrics (NIQE): ``metric(restored, gt=None) -> float``;
* set metrics (FID): ``metric.add(restored, gt)`` per image, then ``metric.compute() -> float``;
* hole metrics (inpainting): ``metric(restored, gt, hole) -> float``, over the hole pixels only.

Metrics whose weights are absent raise :class:`~diffir.metrics.weights.MissingWeightsError` from
``build_metric``; callers skip them and print the message.  Nothing is ever approximated or downloaded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffir.errors import ConfigError

__all__ = ["MetricSpec", "METRICS", "build_metric", "list_metrics", "describe"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str  # "full-reference" | "no-reference" | "set" | "hole"
    convention: str
    weights: str  # what must be present for the metric to run

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("psnr", True, "full-reference",
                   "dB, peak 255, float64; Y = MATLAB rgb2ycbcr (unrounded) if Y mode; crop_border px removed "
                   "(BasicSR calculate_psnr)", "none"),
        MetricSpec("ssim", True, "full-reference",
                   "Wang et al., 11x11 Gaussian sigma 1.5, valid filtering, float64; Y/crop as PSNR "
                   "(BasicSR calculate_ssim)", "none"),
        MetricSpec("psnr_hole", True, "hole",
                   "inpainting: PSNR over the hole pixels only (RGB, no crop), so the known pixels every method "
                   "keeps do not dilute it", "none"),
        MetricSpec("ssim_hole", True, "hole",
                   "inpainting: mean of the SSIM map (as ssim, RGB) over the windows centred in the hole", "none"),
        MetricSpec("lpips", False, "full-reference",
                   "LPIPS v0.1, AlexNet, RGB scaled to [-1, 1], no crop (lpips package)",
                   "torchvision AlexNet file (user-supplied)"),
        MetricSpec("lpips_vgg", False, "full-reference", "LPIPS v0.1, VGG16, otherwise as lpips",
                   "torchvision VGG16 file (user-supplied)"),
        MetricSpec("dists", False, "full-reference",
                   "DISTS, VGG16 with L2 pooling, RGB [0, 1], no resize, no crop (DISTS_pytorch)",
                   "torchvision VGG16 file (user-supplied)"),
        MetricSpec("niqe", False, "no-reference",
                   "MATLAB NIQE: rounded Y, 96x96 blocks, BasicSR/MATLAB pristine params; crop_border removed",
                   "none (pristine params shipped)"),
        MetricSpec("fid", False, "set",
                   "pytorch-fid Inception pool3 (2048-d) at 299x299, restored set vs GT set; biased for small sets",
                   "pytorch-fid Inception file (user-supplied)"),
    )
}  # fmt: skip


def list_metrics() -> list[str]:
    return list(METRICS)


def describe(name: str) -> MetricSpec:
    key = name.strip().lower()
    if key not in METRICS:
        near = difflib.get_close_matches(key, METRICS, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ConfigError(f"unknown metric {name!r}; {hint}choose from {', '.join(METRICS)}")
    return METRICS[key]


def _to_tensor(img: np.ndarray, device: str):
    import torch

    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0


class _TorchPairMetric:
    """Wraps an ``nn.Module`` distance on NCHW [0, 1] tensors as ``metric(restored_uint8, gt_uint8)``."""

    def __init__(self, spec: MetricSpec, module: Any, device: str) -> None:
        self.spec, self.module, self.device = spec, module.to(device), device

    def __call__(self, restored: np.ndarray, gt: np.ndarray) -> float:
        import torch

        with torch.no_grad():
            return float(self.module(_to_tensor(restored, self.device), _to_tensor(gt, self.device))[0])


class _NumpyMetric:
    def __init__(self, spec: MetricSpec, fn: Any, **kwargs: Any) -> None:
        self.spec, self.fn, self.kwargs = spec, fn, kwargs

    def __call__(self, restored: np.ndarray, gt: np.ndarray | None = None, hole: np.ndarray | None = None) -> float:
        if self.spec.kind == "no-reference":
            return float(self.fn(restored, **self.kwargs))
        if self.spec.kind == "hole":
            return float(self.fn(restored, gt, hole, **self.kwargs))
        return float(self.fn(restored, gt, **self.kwargs))


class _SetMetric:
    def __init__(self, spec: MetricSpec, impl: Any, device: str) -> None:
        self.spec, self.impl, self.device = spec, impl, device

    def add(self, restored: np.ndarray, gt: np.ndarray | None) -> None:
        """``gt=None``: the reference set is shared with the instance this one was forked from."""
        self.impl.add(_to_tensor(restored, self.device), None if gt is None else _to_tensor(gt, self.device))

    def fork(self) -> _SetMetric:
        """A fresh accumulator (e.g. for another method) sharing the network and the reference features."""
        return _SetMetric(self.spec, self.impl.fork(), self.device)

    def compute(self) -> float:
        return float(self.impl.compute())


def build_metric(
    name: str,
    *,
    crop_border: int = 0,
    test_y_channel: bool = False,
    weights: dict[str, Any] | None = None,
    device: str = "cpu",
):
    """Instantiate a metric by name.  ``weights`` maps ``alexnet|vgg16|inception_fid`` to file paths."""
    spec = describe(name)
    weights = weights or {}
    if spec.name in ("psnr", "ssim"):
        from diffir.metrics.psnr_ssim import calculate_psnr, calculate_ssim

        fn = calculate_psnr if spec.name == "psnr" else calculate_ssim
        return _NumpyMetric(spec, fn, crop_border=crop_border, test_y_channel=test_y_channel)
    if spec.kind == "hole":
        from diffir.metrics.psnr_ssim import calculate_psnr_hole, calculate_ssim_hole

        return _NumpyMetric(spec, calculate_psnr_hole if spec.name == "psnr_hole" else calculate_ssim_hole)
    if spec.name == "niqe":
        from diffir.metrics.niqe import calculate_niqe

        return _NumpyMetric(spec, calculate_niqe, crop_border=crop_border)
    if spec.name in ("lpips", "lpips_vgg"):
        from diffir.metrics.lpips import LPIPS

        net, backbone = ("alex", "alexnet") if spec.name == "lpips" else ("vgg", "vgg16")
        return _TorchPairMetric(spec, LPIPS(net, weights.get(backbone)), device)
    if spec.name == "dists":
        from diffir.metrics.dists import DISTS

        return _TorchPairMetric(spec, DISTS(weights.get("vgg16")), device)
    from diffir.metrics.fid import FID

    return _SetMetric(spec, FID(weights.get("inception_fid"), device=device), device)
