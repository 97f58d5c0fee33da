"""The one temporary folder of a ``diffir serve`` process: uploads and results live there and nowhere else.

Every item (an upload or a job's result) gets a folder named by a random id; the user's file name is kept, made
safe, so that error messages can name it.  Old items are removed as new ones come (at most ``max_items``, each
kept ``keep_seconds``), and the whole folder when the server stops.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from diffir.errors import DiffIRError

_UNSAFE = re.compile(r"[^\w .()+-]", re.UNICODE)
_ID = re.compile(r"^[0-9a-f]{16}$")


def safe_name(name: str, default: str = "image.png") -> str:
    """A file name that is safe inside one folder: no path parts, controls or leading dots, at most 100 chars."""
    name = Path(name.replace("\\", "/")).name
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or "." not in name:
        return default if not name else f"{name[:90]}.png"
    stem, _, ext = name.rpartition(".")
    return f"{stem[:90]}.{ext[:8]}"


class Workspace:
    """Per-item folders below one temporary root; ``close`` removes everything."""

    def __init__(self, keep_seconds: float = 3600.0, max_items: int = 64) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="diffir-serve-"))
        self.keep_seconds = keep_seconds
        self.max_items = max_items
        self._created: dict[str, float] = {}
        self._lock = threading.Lock()
        #: Items that must survive pruning (those of queued and running jobs); set by the job queue.
        self.in_use: Callable[[], set[str]] = set

    def new_item(self) -> tuple[str, Path]:
        """(id, its empty folder); the oldest items beyond the limits are removed first."""
        self.prune()
        item = secrets.token_hex(8)
        folder = self.root / item
        folder.mkdir()
        with self._lock:
            self._created[item] = time.monotonic()
        return item, folder

    def folder(self, item: str) -> Path:
        """The folder of ``item``; a one-line error when it is unknown or was removed."""
        with self._lock:
            known = item in self._created
        if not (_ID.match(item) and known and (self.root / item).is_dir()):
            raise DiffIRError(f"unknown or expired upload/job {item[:40]!r}: upload the image again")
        return self.root / item

    def exists(self, item: str) -> bool:
        with self._lock:
            return item in self._created

    def remove(self, item: str) -> None:
        with self._lock:
            self._created.pop(item, None)
        shutil.rmtree(self.root / item, ignore_errors=True)

    def prune(self) -> None:
        """Remove items older than ``keep_seconds`` and the oldest beyond ``max_items - 1``, except ``in_use()``."""
        now = time.monotonic()
        with self._lock:
            ordered = sorted(self._created.items(), key=lambda kv: kv[1])
        keep = self.in_use()
        excess = len(ordered) - (self.max_items - 1)
        for item, created in ordered:
            if item in keep:
                continue
            if now - created > self.keep_seconds or excess > 0:
                self.remove(item)
                excess -= 1

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
