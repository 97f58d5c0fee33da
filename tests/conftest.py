"""Shared fixtures: where the reference data lives, tiny models for fast tests."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``$DIFFIR_SHARED`` or ``<repo>/../shared`` (reference vectors, papers, data).

    Resolved from the repository, not the working directory; an empty ``DIFFIR_SHARED`` counts as unset.
    """
    return Path(os.environ.get("DIFFIR_SHARED") or REPO.parent / "shared").resolve()


#: What each top folder of the shared folder holds, for the skip reason of a test that needs it.
_SHARED_CONTENT = {
    "parity": "reference vectors computed by running the official DiffIR/HI-Diff/DiffBIR code",
    "specs": "specifications written from the official code (e.g. its state_dict key list)",
    "data": "real image sets with their reference values (research-only licence, not redistributed)",
}


def require_shared(*parts: str) -> Path:
    """Path under the shared folder, or skip the test with a one-line reason saying what the data is."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        what = _SHARED_CONTENT.get(parts[0], "reference material") if parts else "reference material"
        pytest.skip(f"needs {path}: {what}; not in the repository - set DIFFIR_SHARED to the shared folder "
                    f"(default <repo>/../shared)")
    return path


@functools.cache
def _standin_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="diffir-standin-data-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def shared_data(*parts: str) -> Path:
    """``<shared>/data/<parts>`` when the shared folder has its ``data/``; without it, the same path in a stand-in
    tree of generated images (``tests/standin_data.py``: same layout and file names, procedural content).

    For tests that need *some* images (a training set, an input to tile, a folder to pair), not the real
    images' reference values: those use :func:`require_shared` and skip without the shared folder.  With the
    shared folder present this is exactly ``require_shared("data", *parts)``.
    """
    if (shared_dir() / "data").is_dir():
        return require_shared("data", *parts)
    import standin_data

    rel = "/".join(parts)
    path = standin_data.build(_standin_root(), rel)
    if not path.exists():
        raise LookupError(f"data/{rel} has no stand-in in tests/standin_data.py; use require_shared for it")
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
