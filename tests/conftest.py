"""Shared fixtures: where the reference data lives, tiny models for fast tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$DIFFIR_SHARED`` or ``<repo>/../shared`` (reference vectors, papers, data)."""
    return Path(os.environ.get("DIFFIR_SHARED", REPO.parent / "shared")).resolve()


def require_shared(*parts: str) -> Path:
    """Path under the shared folder, or skip the test with the reason."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found: {path} (set DIFFIR_SHARED to the shared folder)")
    return path


TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2), n_encoder_res=1)


def tiny_model(preset: str = "diffir_sr_x4_s2", seed: int = 0, **overrides):
    """A few-thousand-parameter network of the given preset, deterministic weights, eval mode."""
    import diffir

    torch.manual_seed(seed)
    kw = dict(TINY)
    if "inpaint" in preset:
        kw["num_refinement_blocks"] = 0
    kw.update(overrides)
    return diffir.create_model(preset, **kw).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks: two OpenMP threads spin-wait on each other on a busy 2-core machine (a tiny training step
    # measured ~20x slower, a 256² tiny forward 3.4x); one thread costs little at these sizes.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=["fast", "reference"])
def network_path(request):
    """Run the test on both formulations of the networks (parity must hold on each)."""
    from diffir.runtime import reference_path

    with reference_path(request.param == "reference"):
        yield request.param
