"""Read ``torch.save`` files without executing pickled code.

Always ``weights_only=True``.  Lightning checkpoints also pickle non-tensor objects (OmegaConf configs, enums,
callbacks state).  Those classes are replaced by inert placeholder classes registered only for this load:
their code is never imported or run, and their content is ignored.  Tensors load normally.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from diffir.errors import CheckpointError


class _Placeholder:
    """Stands in for any non-tensor class of the file; its instances are inert ``OrderedDict``s.

    torch's ``weights_only`` unpickler lets SETITEMS/BUILD act only on exact dict/OrderedDict instances, so a
    placeholder must *be* one: dict subclasses (Lightning's ``AttributeDict`` hparams) get their items, plain
    objects (OmegaConf configs, enums) their state in ``__dict__``.  No code of the original class ever runs.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG004 - the arguments are data, ignored
        return OrderedDict()


def _placeholders(names: list[str]) -> list[tuple[type, str]]:
    return [(type(name.rsplit(".", 1)[-1], (_Placeholder,), {}), name) for name in names]


_KNOWN_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF (WebP/WAV) file",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
    b"<": "a text/HTML file",
    b"{": "a JSON/text file",
}


def _sniff(path: Path) -> str | None:
    """None if the file may be a torch checkpoint (zip or legacy pickle), else what it looks like."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "an empty file"
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None
    for magic, what in _KNOWN_MAGIC.items():
        if head.startswith(magic):
            return what
    return "not a checkpoint"


def _unpickler_reason(text: str) -> str:
    """The one line of torch's weights-only refusal that says what was refused (the rest is general advice)."""
    if "WeightsUnpickler error:" in text:
        return text.split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if not line.startswith(advice)), lines[0] if lines else "unsafe content")


def read_torch_file(path: str | Path) -> Any:
    path = Path(path)
    kind = _sniff(path)
    if kind is not None:
        raise CheckpointError(
            f"{path}: not a PyTorch or safetensors checkpoint ({kind}); pass a .pth, .ckpt or .safetensors file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_error = _unpickler_reason(str(exc))
    except OSError as exc:
        if exc.errno is not None:  # permission denied, I/O error ...: about the file system, not the content
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch or safetensors checkpoint ({reason[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, EOFError) or "central directory" in reason or "zip archive" in reason:
            reason = "truncated or corrupt file; download or copy it again"
        raise CheckpointError(f"{path}: not a readable PyTorch or safetensors checkpoint ({reason[:120]})") from None
    get_unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if get_unsafe is None:
        raise CheckpointError(
            f"{path}: contains pickled Python objects besides tensors and this torch is too old to skip them "
            "safely (needs torch>=2.6); re-save only the state_dict"
        )
    names: list[str] = []
    try:
        names = get_unsafe(path)
        with torch.serialization.safe_globals(_placeholders(names)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure here is "cannot read safely"
        what = ", ".join(names[:3]) or first_error[:100]
        raise CheckpointError(
            f"{path}: refusing to unpickle non-tensor objects ({what}); re-save only the state_dict "
            "(torch.save(model.state_dict(), ...)) or convert it to .safetensors"
        ) from None
