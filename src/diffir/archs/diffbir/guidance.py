"""Restoration guidance with the v2.0.0 semantics (spec §B.6, parity README §7.7): at each spaced step the
predicted x̂0 is pulled towards the stage-1 output.  At the newest official commit no sampler calls it; here it
is an option of :class:`~diffir.archs.diffbir.sampler_spaced.SpacedSampler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from diffir.archs.diffbir.sampler_common import NoiseSource
from diffir.errors import ConfigError

SPACES = ("rgb", "latent")
LOSSES = ("mse", "w_mse")
#: ``Guidance(s)`` stores 3000·s (official).
SCALE_FACTOR = 3000.0
#: ``decode(z) -> image in [-1, 1]`` (differentiable); ``encode(image, noise_source) -> scaled latent`` (a posterior
#: SAMPLE, official: one new draw per call).
Decode = Callable[[torch.Tensor], torch.Tensor]
Encode = Callable[[torch.Tensor, NoiseSource], torch.Tensor]

_GRAY = (0.2989, 0.5870, 0.1140)
_SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
_SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def weight_map(img01: torch.Tensor, block: int = 2) -> torch.Tensor:
    """W = 1 − tanh(Σ over non-overlapping 2×2 blocks of the Sobel magnitude of the gray image), (N,1,H,W).

    Flat regions get W ≈ 1, edges and texture W ≈ 0.  The official code calls the block SUM a mean; H and W must
    be even.
    """
    n, _, h, w = img01.shape
    if h % block or w % block:
        raise ConfigError(f"the guidance weight map needs even image sides, got {h}x{w}; pad the image to a "
                          f"multiple of {block}")
    gray_kernel = torch.tensor(_GRAY, dtype=img01.dtype, device=img01.device).view(1, 3, 1, 1)
    gray = torch.sum(img01 * gray_kernel, dim=1, keepdim=True)
    sobel = torch.tensor((_SOBEL_X, _SOBEL_Y), dtype=img01.dtype, device=img01.device).unsqueeze(1)
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), sobel)  # conv2d is a cross-correlation
    mag = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
    # Each block made contiguous before summing, as official: the float32 summation order then matches bit for bit.
    blocks = mag.view(n, 1, h // block, block, w // block, block).permute(0, 1, 2, 4, 3, 5).contiguous()
    blocks = blocks.sum(dim=(-2, -1))
    per_pixel = blocks.tanh().repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return 1 - per_pixel


class Guidance:
    """Base of the guidance losses: ``(g, loss) = guidance(target, pred)``, g = −scale·∂loss/∂pred.

    ``t_start``/``t_stop``: guidance acts at model timestep t only if t_stop < t + 1 < t_start.  ``space``:
    ``rgb`` (decode x̂0 and back-propagate through the decoder) or ``latent`` (compare with an encoded target).
    """

    name = "base"

    def __init__(self, scale: float, t_start: int = 1001, t_stop: int = -1, space: str = "rgb",
                 repeat: int = 1) -> None:
        if space not in SPACES:
            raise ConfigError(f"unknown guidance space {space!r}; choose rgb or latent")
        if repeat < 1:
            raise ConfigError(f"guidance repeat must be at least 1, got {repeat}")
        self.scale = float(scale) * SCALE_FACTOR
        self.t_start = int(t_start)
        self.t_stop = int(t_stop)
        self.space = space
        self.repeat = int(repeat)
        self.target: torch.Tensor | None = None

    def load_target(self, target: torch.Tensor) -> None:
        """The image to pull towards, in [-1, 1] (the pipeline passes 2·stage-1 output − 1)."""
        self.target = target

    def active(self, model_t: int) -> bool:
        return self.t_stop < int(model_t) + 1 < self.t_start

    def loss(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, target: torch.Tensor, pred: torch.Tensor, t: int | None = None) -> tuple[torch.Tensor, float]:
        """(g, loss) for detached copies of the inputs (official); ``t`` is accepted and ignored."""
        target = target.detach().clone()
        with torch.enable_grad():
            pred = pred.detach().clone().requires_grad_(True)
            loss = self.loss(target, pred)
            grad = torch.autograd.grad(loss, pred)[0]
        return -grad * self.scale, loss.item()


class MSEGuidance(Guidance):
    """loss = Σ_batch mean_{C,H,W}(pred − target)²."""

    name = "mse"

    def loss(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return (pred - target).pow(2).mean((1, 2, 3)).sum()


class WeightedMSEGuidance(Guidance):
    """The region-adaptive loss: Σ_batch mean_{C,H,W}((pred − target)²·W), W = weight_map((target + 1)/2)."""

    name = "w_mse"

    def __init__(self, scale: float, t_start: int = 1001, t_stop: int = -1, space: str = "rgb",
                 repeat: int = 1) -> None:
        if space == "latent":
            # Official v2.0.0 crashes here (4-channel latent vs 3-channel weight broadcast): say so up front.
            raise ConfigError("weighted MSE guidance (w_mse) works only in rgb space: its edge weight map needs an "
                              "RGB target; use guidance space rgb or loss mse")
        super().__init__(scale, t_start, t_stop, space, repeat)

    def loss(self, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            w = weight_map((target + 1) / 2)
        return ((pred - target).pow(2) * w).mean((1, 2, 3)).sum()


def make_guidance(loss: str, scale: float, t_start: int = 1001, t_stop: int = -1, space: str = "rgb",
                  repeat: int = 1) -> Guidance:
    """A guidance by its CLI name (``mse`` or ``w_mse``)."""
    classes = {"mse": MSEGuidance, "w_mse": WeightedMSEGuidance}
    if loss not in classes:
        raise ConfigError(f"unknown guidance loss {loss!r}; choose mse or w_mse")
    return classes[loss](scale, t_start, t_stop, space, repeat)


@dataclass
class GuidedX0:
    """The result of :func:`guide_x0`: the guided x̂0 and what each of the ``repeat`` guidance calls saw."""

    x0: torch.Tensor
    applied: bool
    losses: list[float] = field(default_factory=list)
    #: g of each call: image space for rgb, latent space for latent.
    grads: list[torch.Tensor] = field(default_factory=list)
    #: rgb: D(x̂0) of each call; latent: the encoded target (posterior sample) of each call.
    compared: list[torch.Tensor] = field(default_factory=list)


def guide_x0(
    guidance: Guidance,
    x0: torch.Tensor,
    model_t: int,
    mean_coef1: torch.Tensor | float,
    decode: Decode | None = None,
    encode: Encode | None = None,
    noise_source: NoiseSource = None,
) -> GuidedX0:
    """v2.0.0 ``SpacedSampler.apply_cond_fn``: ``repeat`` times x̂0 ← x̂0 + Δ / posterior_mean_coef1[index].

    rgb: Δ = (∂D(x̂0)/∂x̂0)ᵀ·g with g taken on the decoded prediction.  latent: Δ = g against ``encode(target)``,
    a posterior sample with a new draw every repeat.  Outside the time window x̂0 is returned unchanged.
    """
    if guidance.target is None:
        raise ConfigError("restoration guidance has no target; call load_target(2*stage1_output - 1) first")
    if not guidance.active(model_t):
        return GuidedX0(x0, False)
    rescale = 1 / torch.as_tensor(mean_coef1, dtype=x0.dtype, device=x0.device)
    out = GuidedX0(x0, True)
    for _ in range(guidance.repeat):
        if guidance.space == "rgb":
            if decode is None:
                raise ConfigError("rgb-space guidance needs the VAE decoder")
            with torch.enable_grad():
                x0_leaf = out.x0.detach().clone().requires_grad_(True)
                pred = decode(x0_leaf)
            g, loss = guidance(guidance.target, pred, int(model_t) + 1)
            pred.backward(g)
            delta = x0_leaf.grad
            out.compared.append(pred.detach())
        else:
            if encode is None:
                raise ConfigError("latent-space guidance needs the VAE encoder")
            target_latent = encode(guidance.target, noise_source)
            g, loss = guidance(target_latent, out.x0, int(model_t) + 1)
            delta = g
            out.compared.append(target_latent.detach())
        out.x0 = out.x0 + delta * rescale
        out.losses.append(loss)
        out.grads.append(g)
    return out
