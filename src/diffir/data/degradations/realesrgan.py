"""Real-ESRGAN's second-order degradation model (specs §5.2), vectorised over the batch.

Two rounds of blur → resize → noise → JPEG, then a final resize + sinc filter whose order with the last
JPEG is random, then 8-bit rounding.  Per-image draws: kernels, noise levels, grey-noise flags, JPEG
qualities.  Per-batch draws (as in the reference, because they change the tensor shape or the code path):
resize factors and modes, Gaussian-vs-Poisson choice, whether the second blur happens, the final order,
and the crop window.  Every range and probability is a constructor option.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffir.data import rng
from diffir.data.degradations.base import Degradation
from diffir.data.jpeg import jpeg_roundtrip
from diffir.data.kernels import KERNEL_TYPES, filter2d, gaussian_kernel, sample_blur_kernels, sample_final_sinc
from diffir.data.noise import gaussian_noise, poisson_noise
from diffir.data.resize import TORCH_MODES, resize, scaled_size
from diffir.data.transforms import paired_random_crop


class USMSharp(torch.nn.Module):
    """Unsharp masking used to sharpen GT targets in the Real-ESRGAN GAN recipes.

    sharp = img + weight·(img − blur(img)), applied only where |img − blur| exceeds ``threshold``/255,
    with that mask itself blurred for soft transitions.  Defaults: 51×51 Gaussian (σ 8, OpenCV's default σ
    for that size), weight 0.5, threshold 10.
    """

    def __init__(self, radius: int = 50, weight: float = 0.5, threshold: float = 10.0):
        super().__init__()
        size = radius + 1 if radius % 2 == 0 else radius
        self.size = size
        self.sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        self.weight, self.threshold = weight, threshold

    @torch.no_grad()
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        k = gaussian_kernel(self.size, self.sigma, img.device).to(img.dtype)
        residual = img - filter2d(img, k)
        mask = (residual.abs() * 255 > self.threshold).to(img.dtype)
        soft = filter2d(mask, k)
        sharp = (img + self.weight * residual).clamp(0, 1)
        return soft * sharp + (1 - soft) * img


def _choose(gen: torch.Generator, options: Sequence[str]) -> str:
    return options[int(torch.randint(len(options), (1,), generator=gen, device="cpu").item())]


class RealESRGANDegradation(Degradation):
    """``deg(gt) -> {"lq", "gt"[, "gt_usm"]}``; LQ is (H/scale, W/scale), or the ``gt_size`` crop / scale.

    ``gt_usm=True`` degrades USM(GT) instead of GT and also returns ``gt_usm`` (the "V2" GAN recipes use it
    as L1/perceptual target while the discriminator sees plain ``gt``).  ``gt_size`` (e.g. 256) adds the
    final paired random crop; None returns whole images.
    """

    def __init__(
        self,
        scale: int = 4,
        gt_size: int | None = None,
        gt_usm: bool = False,
        # first stage
        kernel_range: Sequence[int] = (7, 9, 11, 13, 15, 17, 19, 21),
        kernel_list: Sequence[str] = KERNEL_TYPES,
        kernel_prob: Sequence[float] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        blur_sigma: Sequence[float] = (0.2, 3.0),
        betag_range: Sequence[float] = (0.5, 4.0),
        betap_range: Sequence[float] = (1.0, 2.0),
        sinc_prob: float = 0.1,
        resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
        resize_range: Sequence[float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: Sequence[float] = (1.0, 30.0),
        poisson_scale_range: Sequence[float] = (0.05, 3.0),
        gray_noise_prob: float = 0.4,
        jpeg_range: Sequence[float] = (30, 95),
        # second stage
        second_blur_prob: float = 0.8,
        kernel_list2: Sequence[str] | None = None,
        kernel_prob2: Sequence[float] | None = None,
        blur_sigma2: Sequence[float] = (0.2, 1.5),
        betag_range2: Sequence[float] = (0.5, 4.0),
        betap_range2: Sequence[float] = (1.0, 2.0),
        sinc_prob2: float = 0.1,
        resize_prob2: Sequence[float] = (0.3, 0.4, 0.3),
        resize_range2: Sequence[float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: Sequence[float] = (1.0, 25.0),
        poisson_scale_range2: Sequence[float] = (0.05, 2.5),
        gray_noise_prob2: float = 0.4,
        jpeg_range2: Sequence[float] = (30, 95),
        final_sinc_prob: float = 0.8,
        resize_modes: Sequence[str] = TORCH_MODES,
        pad_to: int = 21,
    ):
        super().__init__()
        self.scale = int(scale)
        self.gt_size = gt_size
        self.usm = USMSharp() if gt_usm else None
        self.pad_to = pad_to
        self.kernel_range = tuple(kernel_range)
        self.stage1 = dict(
            kernel_list=tuple(kernel_list), kernel_prob=tuple(kernel_prob), sigma_range=tuple(blur_sigma),
            betag_range=tuple(betag_range), betap_range=tuple(betap_range), sinc_prob=sinc_prob,
        )
        self.stage2 = dict(
            kernel_list=tuple(kernel_list2 or kernel_list), kernel_prob=tuple(kernel_prob2 or kernel_prob),
            sigma_range=tuple(blur_sigma2), betag_range=tuple(betag_range2), betap_range=tuple(betap_range2),
            sinc_prob=sinc_prob2,
        )
        self.resize1 = (tuple(resize_prob), tuple(resize_range))
        self.resize2 = (tuple(resize_prob2), tuple(resize_range2))
        self.noise1 = (gaussian_noise_prob, tuple(noise_range), tuple(poisson_scale_range), gray_noise_prob)
        self.noise2 = (gaussian_noise_prob2, tuple(noise_range2), tuple(poisson_scale_range2), gray_noise_prob2)
        self.jpeg_range, self.jpeg_range2 = tuple(jpeg_range), tuple(jpeg_range2)
        self.second_blur_prob = second_blur_prob
        self.final_sinc_prob = final_sinc_prob
        self.resize_modes = tuple(resize_modes)

    # -- steps ---------------------------------------------------------------------------------------
    def _kernels(self, n: int, gen: torch.Generator, stage: dict) -> torch.Tensor:
        return sample_blur_kernels(n, gen, kernel_range=self.kernel_range, pad_to=self.pad_to, **stage)

    def _random_factor(self, gen: torch.Generator, probs: tuple, rng_range: tuple) -> float:
        kind = int(rng.choice(gen, probs, 1).item())  # 0 up, 1 down, 2 keep
        if kind == 0:
            return float(rng.uniform(gen, 1.0, rng_range[1], 1).item())
        if kind == 1:
            return float(rng.uniform(gen, rng_range[0], 1.0, 1).item())
        return 1.0

    def _noise(self, x: torch.Tensor, gen: torch.Generator, dev_gen, params: tuple) -> torch.Tensor:
        gauss_prob, sigma_range, poisson_range, gray_prob = params
        n = x.shape[0]
        gray = rng.bernoulli(gen, gray_prob, n)
        if bool(rng.bernoulli(gen, gauss_prob, 1).item()):
            sigma = rng.uniform(gen, sigma_range[0], sigma_range[1], n) / 255
            x = gaussian_noise(x, sigma, gray, dev_gen)
        else:
            scale = rng.uniform(gen, poisson_range[0], poisson_range[1], n)
            x = poisson_noise(x, scale, gray, dev_gen)
        return x.clamp(0, 1)

    def _jpeg(self, x: torch.Tensor, gen: torch.Generator, q_range: tuple) -> torch.Tensor:
        quality = rng.uniform(gen, q_range[0], q_range[1], x.shape[0])
        return jpeg_roundtrip(x.clamp(0, 1), quality)

    # -- pipeline ------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(gt)
        gen = rng.param_generator(generator)
        dev_gen = rng.device_generator(gen, gt.device)
        b, _, h, w = gt.shape
        out_h, out_w = h // self.scale, w // self.scale
        if (h, w) != (out_h * self.scale, out_w * self.scale):  # whole images (validation): GT cut to a multiple
            gt = gt[..., : out_h * self.scale, : out_w * self.scale]  # of the scale, so GT and output line up
            h, w = gt.shape[-2:]
        result: dict[str, torch.Tensor] = {"gt": gt}
        src = gt
        if self.usm is not None:
            src = result["gt_usm"] = self.usm(gt)

        # first order
        x = filter2d(src, self._kernels(b, gen, self.stage1))
        factor = self._random_factor(gen, *self.resize1)
        x = resize(x, scaled_size(h, w, factor), _choose(gen, self.resize_modes))
        x = self._noise(x, gen, dev_gen, self.noise1)
        x = self._jpeg(x, gen, self.jpeg_range)

        # second order
        k2 = self._kernels(b, gen, self.stage2)
        if bool(rng.bernoulli(gen, self.second_blur_prob, 1).item()):
            x = filter2d(x, k2)
        factor = self._random_factor(gen, *self.resize2)
        x = resize(x, scaled_size(h / self.scale, w / self.scale, factor), _choose(gen, self.resize_modes))
        x = self._noise(x, gen, dev_gen, self.noise2)

        sinc = sample_final_sinc(b, gen, self.final_sinc_prob, self.kernel_range, self.pad_to)
        mode = _choose(gen, self.resize_modes)
        if bool(rng.bernoulli(gen, 0.5, 1).item()):
            x = filter2d(resize(x, (out_h, out_w), mode), sinc)
            x = self._jpeg(x, gen, self.jpeg_range2)
        else:
            x = self._jpeg(x, gen, self.jpeg_range2)
            x = filter2d(resize(x, (out_h, out_w), mode), sinc)

        lq = torch.round(x.clamp(0, 1) * 255) / 255
        if self.gt_size is not None:
            targets = torch.cat([result[k] for k in ("gt", "gt_usm") if k in result], dim=1)
            gt_patch = min(self.gt_size, (out_h * self.scale), (out_w * self.scale))
            lq, targets = paired_random_crop(lq, targets, gt_patch, self.scale, generator=gen)
            result["gt"] = targets[:, :3]
            if "gt_usm" in result:
                result["gt_usm"] = targets[:, 3:]
        result["lq"] = lq.contiguous()
        return result


class TrainingPairPool:
    """Shuffled pool of past training pairs (Real-ESRGAN's queue) to decorrelate batches.

    Degradation parameters are partly per batch, so consecutive batches look alike; mixing pairs from
    ``pool_size / B`` past batches breaks that.  While filling, batches pass through unchanged; once full,
    the pool is shuffled, its first B entries are returned and replaced by the incoming batch.
    ``pool_size`` must be divisible by the batch size.  :meth:`state_dict` makes it resumable.
    """

    def __init__(self, pool_size: int = 180):
        self.pool_size = int(pool_size)
        self.store: dict[str, torch.Tensor] = {}
        self.filled = 0

    def __call__(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        keys = [k for k, v in batch.items() if isinstance(v, torch.Tensor)]
        b = batch[keys[0]].shape[0]
        if self.pool_size % b:
            raise ValueError(f"pool_size {self.pool_size} must be divisible by the batch size {b}")
        if not self.store:
            self.store = {k: batch[k].new_empty((self.pool_size, *batch[k].shape[1:])) for k in keys}
        if self.filled < self.pool_size:
            for k in keys:
                self.store[k][self.filled : self.filled + b] = batch[k]
            self.filled += b
            return batch
        gen = rng.param_generator(generator)
        order = torch.randperm(self.pool_size, generator=gen, device="cpu").to(batch[keys[0]].device)
        out = dict(batch)
        for k in keys:
            self.store[k] = self.store[k][order]
            out[k] = self.store[k][:b].clone()
            self.store[k][:b] = batch[k]
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"filled": torch.tensor(self.filled, device="cpu"), **{f"store.{k}": v for k, v in self.store.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.filled = int(state["filled"])
        self.store = {k[len("store.") :]: v.clone() for k, v in state.items() if k.startswith("store.")}


