"""Motion blur from real kernels and/or random camera-shake trajectories, with optional noise."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from diffir.data import rng
from diffir.data.degradations.base import Degradation
from diffir.data.kernels import filter2d
from diffir.data.motion import center_on_canvas, load_kernels, random_trajectory_kernels
from diffir.data.noise import gaussian_noise


class MotionBlurDegradation(Degradation):
    """``deg(gt) -> {"lq", "gt", "kernel"}``, LQ the same size as GT (true convolution, reflected borders).

    Each image gets, with probability ``trajectory_prob``, a fresh random trajectory kernel (canvas
    ``trajectory_size``, length in ``length_range`` pixels), otherwise a kernel drawn from ``kernel_dir``
    (e.g. ``../shared/data/deblur/kernels``), randomly flipped/rotated by 90° when ``augment_kernels``.
    Then Gaussian noise σ ~ U[``noise_range``]/255 with probability ``noise_prob`` and 8-bit rounding.
    """

    def __init__(
        self,
        kernel_dir: str | Path | None = None,
        trajectory_prob: float | None = None,
        trajectory_size: int = 31,
        length_range: Sequence[float] = (5.0, 25.0),
        augment_kernels: bool = True,
        noise_prob: float = 0.0,
        noise_range: Sequence[float] = (0.0, 5.0),
        quantize: bool = True,
    ):
        super().__init__()
        self.bank = load_kernels(kernel_dir) if kernel_dir is not None else []
        if trajectory_prob is None:
            trajectory_prob = 0.5 if self.bank else 1.0
        if trajectory_prob < 1 and not self.bank:
            raise ValueError("trajectory_prob < 1 needs kernel_dir with real kernels")
        self.trajectory_prob = trajectory_prob
        self.trajectory_size = trajectory_size | 1
        self.length_range = tuple(length_range)
        self.augment_kernels = augment_kernels
        self.noise_prob = noise_prob
        self.noise_range = tuple(noise_range)
        self.quantize = quantize

    def sample_kernels(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """(n, K, K) float64 kernels on the CPU, K odd, each summing to 1."""
        use_traj = rng.bernoulli(gen, self.trajectory_prob, n).tolist()
        picks: list[torch.Tensor] = []
        traj = random_trajectory_kernels(
            sum(use_traj), self.trajectory_size, self.length_range, generator=gen
        ) if any(use_traj) else None
        t = 0
        for is_traj in use_traj:
            if is_traj:
                picks.append(traj[t])
                t += 1
                continue
            k = self.bank[int(torch.randint(len(self.bank), (1,), generator=gen, device="cpu").item())]
            if self.augment_kernels:
                flags = torch.randint(2, (3,), generator=gen, device="cpu").tolist()
                k = k.flip(-1) if flags[0] else k
                k = k.flip(-2) if flags[1] else k
                k = k.transpose(0, 1) if flags[2] else k
            picks.append(k)
        size = max(max(k.shape) for k in picks) | 1
        return torch.stack([center_on_canvas(k, size) for k in picks])

    @torch.no_grad()
    def forward(self, gt: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        self._check(gt)
        gen = rng.param_generator(generator)
        dev_gen = rng.device_generator(gen, gt.device)
        b, c, h, w = gt.shape
        kernels = self.sample_kernels(b, gen)
        # flipped: a point-spread function is applied by convolution, filter2d correlates
        x = filter2d(gt, kernels.flip(-2, -1))
        noisy = rng.bernoulli(gen, self.noise_prob, b)
        sigma = rng.uniform(gen, *self.noise_range, b) / 255 * noisy
        x = gaussian_noise(x, sigma, torch.zeros(b, dtype=torch.bool, device="cpu"), dev_gen).clamp(0, 1)
        if self.quantize:
            x = torch.round(x * 255) / 255
        return {"lq": x.contiguous(), "gt": gt, "kernel": kernels.to(device=gt.device, dtype=gt.dtype)}
