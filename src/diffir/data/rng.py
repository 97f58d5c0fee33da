"""Random-number plumbing that keeps degradations deterministic on any device.

A degradation receives one optional ``torch.Generator``.  Scalar/per-sample parameters are drawn on the
CPU from it (cheap, identical on every device), and bulk noise is drawn on the tensor's device from a
generator seeded by it.  The same seed therefore gives the same parameters everywhere, and the same
images on the same device type, without ever moving image-sized noise between devices.
"""

from __future__ import annotations

import torch

_SEED_HIGH = 2**62
_CPU = torch.device("cpu")


def draw_seed(generator: torch.Generator | None) -> int:
    """One 62-bit seed from ``generator`` (or torch's global RNG when None)."""
    if generator is not None and generator.device.type != "cpu":
        return int(torch.randint(_SEED_HIGH, (1,), generator=generator, device=generator.device).item())
    return int(torch.randint(_SEED_HIGH, (1,), generator=generator, device=_CPU).item())


def param_generator(generator: torch.Generator | None) -> torch.Generator:
    """A CPU generator for parameter sampling, derived from ``generator`` (or the global RNG)."""
    if generator is not None and generator.device.type == "cpu":
        return generator
    return torch.Generator(device=_CPU).manual_seed(draw_seed(generator))


def device_generator(cpu_gen: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator living on ``device`` for image-sized random draws, seeded from ``cpu_gen``."""
    if device.type == "cpu":
        return cpu_gen
    gen = torch.Generator(device=device)
    gen.manual_seed(draw_seed(cpu_gen))
    return gen


def uniform(gen: torch.Generator, low: float, high: float, n: int) -> torch.Tensor:
    """``n`` float64 draws from U[low, high) on the CPU."""
    return low + (high - low) * torch.rand(n, generator=gen, dtype=torch.float64, device=_CPU)


def bernoulli(gen: torch.Generator, p: float, n: int) -> torch.Tensor:
    """``n`` booleans, each True with probability ``p`` (CPU)."""
    return torch.rand(n, generator=gen, dtype=torch.float64, device=_CPU) < p


def choice(gen: torch.Generator, probs: list[float] | tuple[float, ...], n: int) -> torch.Tensor:
    """``n`` category indices drawn with the (not necessarily normalised) weights ``probs`` (CPU)."""
    w = torch.as_tensor(probs, dtype=torch.float64, device=_CPU)
    return torch.multinomial(w / w.sum(), n, replacement=True, generator=gen)


def randint(gen: torch.Generator, low: int, high: int, n: int | None = None) -> torch.Tensor | int:
    """Integers in [low, high] (inclusive); a Python int when ``n`` is None."""
    out = torch.randint(low, high + 1, (1 if n is None else n,), generator=gen, device=_CPU)
    return int(out.item()) if n is None else out
