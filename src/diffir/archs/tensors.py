"""Reading hyper-parameters off a state_dict's tensors (shared by the architectures' ``detect`` modules)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from diffir.errors import CheckpointError


def count_indexed(sd: Mapping[str, Any], prefix: str, suffix: str) -> int:
    """Number of consecutive indices i (0, 1, 2 ...) with a key ``prefix{i}suffix``."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + "$")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    n = 0
    while n in found:
        n += 1
    return n


def expansion_factor(widths_hidden: list[tuple[int, int]]) -> float:
    """Shortest decimal f with int(width·f) == hidden for every pair (the official truncation rule: an FFN or MLP
    hidden width is ``int(width * factor)``, so 2.66 and 2.665 can give the same tensors)."""

    def ok(f: float) -> bool:
        return all(int(w * f) == h for w, h in widths_hidden)

    for digits in range(1, 9):
        scale = 10**digits
        for w, h in widths_hidden:
            for base in (h / w, (h + 0.5) / w):
                for cand in (round(base, digits), math.ceil(base * scale) / scale):
                    if ok(cand):
                        return cand
    raise CheckpointError(f"cannot find an expansion factor for (width, hidden) pairs {widths_hidden}")
