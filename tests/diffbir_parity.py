"""Shared support of the DiffBIR parity tests (../shared/parity/diffbir, README there).

Every ``<case>.json`` of the folder is a case; public and held-out cases share the format, so every setting is
read from the json.  A test compares tensors through :meth:`Case.check`, which records what it compared;
``tests/test_parity_diffbir.py`` asserts that, over all groups, every tensor that is not an input was compared.

Tolerances (README §6): ``|yours − ref| ≤ atol + rtol·|ref|`` with, by key:
single forwards 1e-4/1e-4; schedules 0/1e-6 (``inf`` must match ``inf``); sampler chains 1e-3/1e-4; scalar
losses 0/1e-5; ``deg.*`` 1e-6/0; random draws and integer tensors exact.
"""

from __future__ import annotations

import json
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from conftest import require_shared, shared_dir

#: Parameter files of a case (json ``files`` key → role).
WEIGHT_FILES = ("sd", "controlnet", "swinir", "bsrnet", "scunet")

_SINGLE = (1e-4, 1e-4)
_SCHEDULE = (0.0, 1e-6)
_CHAIN = (1e-3, 1e-4)
_LOSS = (0.0, 1e-5)
_DEGRADATION = (1e-6, 0.0)
_EXACT = (0.0, 0.0)


def case_names() -> list[str]:
    """Every case in the parity folder (a placeholder name when the folder is absent: its test then skips
    with the reason, as every parity test does without the shared folder)."""
    folder = shared_dir() / "parity" / "diffbir"
    names = sorted(p.stem for p in folder.glob("*.json") if p.name != "released_layout.json")
    return names or ["<missing>"]


def is_draw(key: str) -> bool:
    """Recorded random draws: compared exactly (or injected)."""
    last = key.rsplit(".", 1)[-1]
    return last in ("noise", "x_T", "step_noise", "start_noise", "sample_noise", "encode_noise") or \
        last.endswith("_noise")


def tolerance(key: str, ref: torch.Tensor) -> tuple[float, float]:
    """(atol, rtol) of a reference tensor, by its key (README §6)."""
    if key.startswith("in."):
        raise KeyError(f"{key} is an input")
    if not ref.is_floating_point() or is_draw(key):
        return _EXACT
    if key.startswith("deg."):
        return _DEGRADATION
    if key.startswith(("sched.", "spaced.", "ddim.")) or key == "guid.spaced_timesteps" or \
            key == "guid.posterior_mean_coef1":
        return _SCHEDULE
    if key.endswith(".loss") and ref.numel() <= 4:
        return _LOSS
    if key.startswith(("step.", "run.", "grun.", "train.")):
        return _CHAIN
    return _SINGLE


class Case:
    """One parity case: its json (``meta``), reference tensors (``ref``) and weights (``weights(role)``)."""

    def __init__(self, name: str) -> None:
        from safetensors.torch import load_file

        self.root: Path = require_shared("parity", "diffbir")
        self.name = name
        self.meta: dict[str, Any] = json.loads((self.root / f"{name}.json").read_text())
        self.ref: dict[str, torch.Tensor] = load_file(str(self.root / self.meta["files"]["tensors"]))
        self.inputs = set(self.meta["input_keys"])
        self.checked: set[str] = set()
        self.errors: dict[str, float] = {}

    def path(self, role: str) -> Path:
        """The file of a weight role (``sd``, ``controlnet``, ``swinir``, ``bsrnet``, ``scunet``)."""
        return self.root / self.meta["files"][role]

    def weights(self, role: str) -> dict[str, torch.Tensor]:
        """A state_dict with parameters cast from float8 to float32 (lossless) and buffers as stored."""
        from safetensors.torch import load_file

        sd = load_file(str(self.path(role)))
        return {k: v.float() if v.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) else v for k, v in sd.items()}

    @cached_property
    def released_layout(self) -> dict[str, Any]:
        return json.loads((self.root / "released_layout.json").read_text())

    def input(self, key: str) -> torch.Tensor:
        assert key in self.inputs, f"{key} is not an input of {self.name}"
        return self.ref[key].clone()

    def keys(self, prefix: str) -> list[str]:
        """Reference (non-input) keys starting with ``prefix``."""
        return sorted(k for k in self.ref if k.startswith(prefix) and k not in self.inputs)

    def check(self, key: str, value: torch.Tensor | float | int | Any) -> None:
        """Assert ``value`` matches ``ref[key]`` within the key's tolerance, and record the key as compared."""
        ref = self.ref[key]
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        value = value.detach().to("cpu")
        assert tuple(value.shape) == tuple(ref.shape) or value.numel() == ref.numel() == 1, \
            f"{self.name}/{key}: shape {tuple(value.shape)} != reference {tuple(ref.shape)}"
        atol, rtol = tolerance(key, ref)
        if (atol, rtol) == _EXACT:
            same = torch.equal(value.to(ref.dtype).reshape(ref.shape), ref)
            assert same, f"{self.name}/{key}: not identical to the reference"
            self.errors[key] = 0.0
        else:
            a = value.to(torch.float64).reshape(ref.shape)
            r = ref.to(torch.float64)
            inf_a, inf_r = torch.isinf(a), torch.isinf(r)
            assert torch.equal(inf_a, inf_r) and torch.equal(a[inf_r], r[inf_r]), \
                f"{self.name}/{key}: infinities differ from the reference"
            assert not torch.isnan(a).any() or torch.equal(torch.isnan(a), torch.isnan(r)), \
                f"{self.name}/{key}: NaN where the reference has none"
            finite = ~inf_r & ~torch.isnan(r)
            err = (a - r).abs()[finite]
            bound = (atol + rtol * r.abs())[finite]
            worst = float(err.max()) if err.numel() else 0.0
            self.errors[key] = worst
            assert bool((err <= bound).all()), \
                f"{self.name}/{key}: max |err| {worst:.3g} over atol {atol:g} + rtol {rtol:g}·|ref| " \
                f"(max |ref| {float(r[finite].abs().max()) if finite.any() else math.nan:.3g})"
        self.checked.add(key)

    def assert_group_checked(self, prefix: str) -> None:
        """Every reference key of a group was compared by the test that owns it."""
        missing = [k for k in self.keys(prefix) if k not in self.checked]
        assert not missing, f"{self.name}: {prefix}* references not compared: {missing}"


_CASES: dict[str, Case] = {}


def case(name: str) -> Case:
    """The cached case (tensors are read once per test session)."""
    if name not in _CASES:
        _CASES[name] = Case(name)
    return _CASES[name]
