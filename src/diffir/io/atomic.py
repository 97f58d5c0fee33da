"""Atomic file writes: write to a temporary name in the destination folder, then rename.

A crash or a full disk never leaves a half-written image or checkpoint under the final name.  Temporary names
carry the writer's process id (``.NAME.<pid>-<hex>.tmp.EXT``), so the next run in a folder can remove what a
killed run left behind (:func:`remove_stale_temporaries`) without touching a live writer's file.  Every file
written here gets the permissions the umask gives (0644 under the usual 022), whatever the writing library did.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

_TEMP = re.compile(r"^\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp(\.[^.]*)?$")
# Left by earlier diffir versions (no pid) and by safetensors' own writer (tempfile crate: ".tmp" + 6 chars):
# removed once they are clearly abandoned.
_FOREIGN_TEMP = re.compile(r"^(\..+\.[0-9a-f]{8}\.tmp(\.[^.]*)?|\.tmp[A-Za-z0-9]{6})$")
_FOREIGN_AGE = 600.0  # seconds
# Above this size a safetensors file is written by the library itself (no second copy in memory).
_IN_MEMORY_LIMIT = 1 << 30


def file_mode() -> int:
    """The mode a new file gets from the umask (0o644 under umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: it creates the file 0600; os.open with 0o666 gives the usual umask-based permissions.
    for _ in range(100):
        tmp_path = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover
        raise FileExistsError(f"cannot create a temporary file next to {path}")
    try:
        yield tmp_path
        # A writer may have replaced the file with its own private one (safetensors writes 0600).
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def save_safetensors(path: str | os.PathLike, tensors: Mapping, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically, with umask permissions and no library temporary file."""
    import safetensors.torch

    with atomic_path(path) as tmp:
        if sum(t.numel() * t.element_size() for t in tensors.values()) < _IN_MEMORY_LIMIT:
            tmp.write_bytes(safetensors.torch.save(dict(tensors), metadata=metadata))
        else:
            safetensors.torch.save_file(dict(tensors), str(tmp), metadata=metadata)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one owned by another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Remove the temporary files a killed writer left in ``folder`` (not recursive); the number removed.

    A diffir temporary is stale when its writer process is gone; an older-format or library temporary when it
    has not changed for ten minutes.  Unreadable folders and files that vanish meanwhile are ignored.
    """
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        match = _TEMP.match(name)
        try:
            if match:
                stale = not process_alive(int(match["pid"]))
            elif _FOREIGN_TEMP.match(name):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _FOREIGN_AGE
            else:
                continue
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a reader never sees half a report."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
