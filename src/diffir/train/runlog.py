"""The run folder's JSON-lines logs (``log.jsonl``, ``val.jsonl``) and small text files, written safely.

A resumed run redoes the iterations after its checkpoint; the lines the interrupted run logged for them are
dropped first, so the log reads as one run (iterations in order, none twice).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffir.errors import DiffIRError, describe_os_error
from diffir.io.atomic import atomic_path


def truncate_after(path: Path, iteration: int) -> int:
    """Drop the lines of ``path`` logged after ``iteration`` (and a half-written last line); the number dropped.

    The file is rewritten atomically, and only when something is dropped.
    """
    if not path.is_file():
        return 0
    kept: list[str] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            after = int(record.get("iter", 0)) > iteration if isinstance(record, dict) else True
        except (ValueError, TypeError):  # a line cut short by a kill
            after = True
        if after:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        write_text(path, "".join(line + "\n" for line in kept))
    return dropped


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically (never a half-written config.yaml / best.json)."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DiffIRError(f"cannot write {describe_os_error(exc, path)}") from None


def append_record(path: Path, record: dict) -> None:
    """One JSON line at the end of ``path``; a failed write (full disk) names the file."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise DiffIRError(f"cannot write {describe_os_error(exc, path)}") from None
