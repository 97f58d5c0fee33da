"""Reading a user's pretrained loss-network weights (VGG19, ResNet-PL encoder) safely.

A ``.pth`` file is a pickle, and unpickling can run arbitrary code, so it is read with
``torch.load(weights_only=True)``: a file holding anything but tensors and plain containers is refused, never
executed.  Every failure is one ConfigError line naming the file and the config key to fix.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from diffir.errors import ConfigError, describe_os_error


def read_state_dict(path: Path, what: str, key: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (safetensors, or a torch pickle of tensors; ``state_dict`` wrapper unwrapped)."""
    fix = f"point {key} at {what} (.pth or .safetensors)"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch's notes on pickle protocols are noise here
                warnings.simplefilter("ignore")
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ConfigError(f"{describe_os_error(exc, path)} ({key})") from None
    except Exception as exc:  # noqa: BLE001 - classified into one line below
        text = " ".join(str(exc).split())
        if "Weights only load failed" in text:
            reason = text.split("WeightsUnpickler error:", 1)[-1].split(" Check the documentation")[0].strip()
            raise ConfigError(f"{path}: refused: not a plain tensors file ({reason[:120]}); such a file is never "
                              f"unpickled in full, as that could run code; {fix}") from None
        detail = text[:160]
        raise ConfigError(f"{path}: not a readable weights file ({type(exc).__name__}: {detail}); {fix}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise ConfigError(f"{path}: not a state_dict of named tensors; {fix}")
    return sd
