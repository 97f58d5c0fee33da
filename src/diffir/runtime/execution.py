"""Fast or reference formulation of the network.

Both compute the same function from the same weights.  The *reference* path is the plain formulation the
official code uses (NCHW tensors, explicit LayerNorm, modulation as a separate multiply-add, normalised q/k
materialised); parity with the official outputs is checked on it bit for bit.  The *fast* path (the default)
works channels-last, folds the LayerNorm affine and the per-image prior modulation into the following 1×1
convolution, and computes attention from a Gram matrix and norms without copies; it equals the reference to
float rounding (tests: ≤ 1e-4, outputs and gradients).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("diffir_reference_path", default=False)


def fast_path() -> bool:
    """True unless inside :func:`reference_path`."""
    return not _REFERENCE.get()


@contextlib.contextmanager
def reference_path(enabled: bool = True) -> Iterator[None]:
    """Run the plain (official) formulation inside the block; ``enabled=False`` forces the fast path."""
    token = _REFERENCE.set(enabled)
    try:
        yield
    finally:
        _REFERENCE.reset(token)
