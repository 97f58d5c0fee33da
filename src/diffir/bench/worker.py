"""``--fresh``: each timed forward in a new Python process, set up as the ``diffir`` command sets itself up.

The parent starts ``python -m diffir.bench.worker SPEC_JSON``; the worker calls
:func:`diffir.runtime.keep_freed_memory` (fast path only: the reference path keeps glibc's defaults, as the
official code runs) and :func:`diffir.runtime.configure_threads` (with the count the parent
resolved, so both paths run on the same number of threads), loads the model, builds the input, and times one
cold forward: the first in its process, so oneDNN primitive creation, the allocator growing its heap and the
kernel zeroing fresh pages (minor page faults) all count, as they do for a user restoring one image.  It
reports its own wall time, ru_minflt / ru_majflt deltas around the forward and ru_maxrss (the whole process:
torch, weights and activations) on one marked stdout line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from diffir.errors import DiffIRError

MARKER = "DIFFIR_BENCH_RESULT "


def worker_command(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "diffir.bench.worker", json.dumps(spec)]


def run_worker(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one worker process (``spec``: source, height, width, device, precision, threads, path, seed) and
    return what it reported (a :class:`~diffir.bench.measure.Run` as a dict plus ``threads`` and
    ``keep_freed_memory``)."""
    import diffir

    env = dict(os.environ)
    package_root = str(Path(diffir.__file__).resolve().parents[1])  # the same diffir as this process
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(worker_command(spec), capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise DiffIRError(f"benchmark worker process timed out after {timeout:.0f} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            if proc.returncode == 0:
                return json.loads(line[len(MARKER):])
            break
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else f"exit code {proc.returncode}"
    raise DiffIRError(f"benchmark worker process failed: {reason}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    from diffir.runtime import configure_threads, keep_freed_memory

    # First, as the command line does; the reference path runs as the official code does, with glibc's
    # defaults, so that "as users run it" compares the whole program before and after the optimisations.
    kept = keep_freed_memory() if spec["path"] != "reference" else False
    threads = configure_threads(spec["threads"])

    from diffir.bench.measure import make_forward, make_input, timed
    from diffir.bench.models import load_source
    from diffir.pipelines.precision import resolve_device, resolve_precision

    device = resolve_device(spec["device"])
    dtype = resolve_precision(spec["precision"], device)
    model = load_source(spec["source"]).to(device)
    lq = make_input(model, spec["height"], spec["width"], device, seed=spec.get("seed", 0))
    forward = make_forward(model, lq, device, dtype, spec["path"], seed=spec.get("seed", 0))
    run = timed(forward, device)
    report = {**run.to_dict(), "threads": threads, "keep_freed_memory": kept}
    print(MARKER + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DiffIRError as exc:
        print(f"diffir bench worker: error: {exc}", file=sys.stderr)
        sys.exit(2)
