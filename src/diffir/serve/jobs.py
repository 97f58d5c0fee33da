"""Restoration off the request threads: a bounded queue and one worker thread that restores one job at a time
(on a CPU two jobs at once only share the same cores), with one loaded instance per model."""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffir.errors import DiffIRError, describe_failure, print_warning
from diffir.serve.catalog import ModelEntry


class QueueFull(DiffIRError):
    def __init__(self, ahead: int) -> None:
        super().__init__(f"busy: {ahead} job{'s' * (ahead != 1)} ahead and the queue is full; try again when one "
                         "finishes")
        self.ahead = ahead


@dataclass
class Job:
    id: str
    folder: Path  # where the result is written
    model: ModelEntry
    image: Path
    mask: Path | None
    options: dict[str, Any]  # Restorer keyword arguments: tile, precision, seed, outscale
    state: str = "queued"  # queued, running, done, failed
    stage: str = ""  # what runs now: loading, restoring, statistics, tiles
    done: int = 0
    total: int = 0
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    result: Path | None = None
    seconds: float = 0.0

    def report(self, stage: str, done: int, total: int) -> None:
        """Progress callback of the tiled passes (``Restorer(on_progress=...)``)."""
        self.stage, self.done, self.total = stage, done, total


class JobQueue:
    """At most ``size`` jobs wait; ``run(job)`` is called for each, in order, on one worker thread."""

    def __init__(self, run: Callable[[Job], None], size: int = 4) -> None:
        self._run = run
        self.size = size
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="diffir-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> int:
        """Queue ``job``; the number of jobs ahead of it.  :class:`QueueFull` when ``size`` jobs already wait."""
        with self._ready:
            ahead = len(self._waiting) + (self._running is not None)
            if len(self._waiting) >= self.size:
                raise QueueFull(ahead)
            self._waiting.append(job)
            self._ready.notify()
            return ahead

    def ahead(self, job: Job) -> int:
        """How many jobs run or wait before ``job`` (0 once it runs or is finished)."""
        with self._ready:
            if job not in self._waiting:
                return 0
            return list(self._waiting).index(job) + (self._running is not None)

    def active(self) -> list[Job]:
        with self._ready:
            return [*self._waiting, *([self._running] if self._running else [])]

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the running job (waiting ones are dropped)."""
        with self._ready:
            self._stopping = True
            self._waiting.clear()
            self._ready.notify()
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                job = self._running = self._waiting.popleft()
            job.state = "running"
            start = time.perf_counter()
            try:
                with collect_warnings(job.warnings):
                    self._run(job)
                job.state = "done"
            except Exception as exc:  # noqa: BLE001 - one failed job must not stop the worker; shown in the page
                job.error = describe_failure(exc)
                job.state = "failed"
            job.seconds = time.perf_counter() - start
            with self._ready:
                self._running = None


# ------------------------------------------------------------------------------------------------ warnings
_sink = threading.local()


@contextmanager
def collect_warnings(into: list[str]):
    """Warnings raised on this thread inside the block go to ``into`` (see :func:`route_warnings`)."""
    _sink.messages = into
    try:
        yield
    finally:
        _sink.messages = None


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    messages = getattr(_sink, "messages", None)
    if messages is None:
        print_warning(message, category, filename, lineno, file, line)
    else:
        messages.append(str(message))


@contextmanager
def route_warnings():
    """While the server runs: a thread inside :func:`collect_warnings` keeps its warnings (shown in the page);
    others print one line as the CLI does.  ``catch_warnings`` cannot do this: it is process-wide, not per thread."""
    previous = warnings.showwarning
    warnings.showwarning = _show
    try:
        yield
    finally:
        warnings.showwarning = previous
