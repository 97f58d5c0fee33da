"""What the web app does, without HTTP: take uploads, check them as ``diffir restore`` would, queue jobs, restore
them with one loaded instance per model, and make previews the browser can show."""

from __future__ import annotations

import argparse
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffir.errors import DiffIRError, ImageError
from diffir.io.images import DEFAULT_MAX_PIXELS, image_size, read_image, to_8bit, write_image
from diffir.option_values import scale_factor, seed, tile_size
from diffir.pipelines.limits import DEFAULT_MAX_OUTPUT_PIXELS
from diffir.pipelines.restore_file import check_mask_size, restore_file
from diffir.serve.catalog import ModelEntry, model_catalog
from diffir.serve.jobs import Job, JobQueue, collect_warnings
from diffir.serve.workspace import Workspace, safe_name

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class Upload:
    id: str
    path: Path
    width: int
    height: int
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Settings:
    models: Path | None = None  # the models folder (None: $DIFFIR_MODELS or ~/.cache/diffir/models)
    device: str = "auto"
    queue_size: int = 4
    max_upload_bytes: int = 64 << 20
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_output_pixels: int | None = DEFAULT_MAX_OUTPUT_PIXELS


class Service:
    def __init__(self, settings: Settings = Settings()) -> None:  # noqa: B008 - frozen dataclass, never mutated
        self.settings = settings
        self.workspace = Workspace()
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self._models: dict[str, Any] = {}  # name -> loaded model, one instance each (used by the worker only)
        self._lock = threading.Lock()
        self.queue = JobQueue(self._restore, settings.queue_size)
        self.workspace.in_use = self._in_use

    def close(self) -> None:
        self.queue.close()
        self.workspace.close()

    # ------------------------------------------------------------------------------------------ models
    def models(self) -> list[ModelEntry]:
        return model_catalog(self.settings.models)

    def _entry(self, name: str) -> ModelEntry:
        entries = self.models()
        for entry in entries:
            if entry.name == name:
                return entry
        names = ", ".join(e.name for e in entries) or "none"
        raise DiffIRError(f"unknown model {name!r}; choose one of: {names}")

    # ------------------------------------------------------------------------------------------ uploads
    def new_upload(self, name: str) -> tuple[str, Path]:
        """(id, path to write the uploaded bytes to): the user's file name, made safe, in a new folder."""
        item, folder = self.workspace.new_item()
        self._forget_removed()
        return item, folder / safe_name(name)

    def check_upload(self, item: str, path: Path) -> Upload:
        """Decode the whole upload as ``diffir restore`` would (same limits, same one-line errors); the upload is
        removed when it fails."""
        try:
            if path.stat().st_size == 0:
                raise ImageError(f"{path}: empty file (0 bytes); choose an image file")
            warnings: list[str] = []
            with collect_warnings(warnings):
                width, height = image_size(path, max_pixels=self.settings.max_pixels)  # the header: bombs first
                read_image(path, max_pixels=self.settings.max_pixels)  # truncated or damaged files fail here
        except Exception:
            self.workspace.remove(item)
            raise
        upload = Upload(item, path, width, height, tuple(warnings))
        with self._lock:
            self.uploads[item] = upload
        return upload

    def upload(self, item: str) -> Upload:
        self.workspace.folder(item)  # one-line error when unknown or expired
        with self._lock:
            upload = self.uploads.get(item)
        if upload is None:
            raise DiffIRError(f"{item[:40]!r} is not an upload")
        return upload

    # ------------------------------------------------------------------------------------------ jobs
    def submit(self, request: dict[str, Any]) -> Job:
        """Check a restore request (upload ids, model name and options as the page sends them) and queue it."""
        known = {"image", "mask", "model", "tile", "precision", "seed", "outscale"}
        unknown = sorted(set(request) - known)
        if unknown:
            raise DiffIRError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if not request.get("image"):
            raise DiffIRError("no image: upload one first")
        image = self.upload(str(request["image"]))
        entry = self._entry(str(request.get("model") or ""))
        mask = self.upload(str(request["mask"])) if request.get("mask") else None
        if entry.task == "inpaint" and mask is None:
            raise DiffIRError(f"{entry.name} is an inpainting model: paint the holes or upload a mask "
                              "(white = hole)")
        if mask is not None and entry.task != "inpaint":
            raise DiffIRError(f"a mask was given but {entry.name} does {entry.task or 'no inpainting'}, not "
                              "inpainting; choose an inpainting model")
        if mask is not None:
            check_mask_size(image.path, mask.path, (mask.width, mask.height), (image.width, image.height))
        options = _restore_options(request)
        item, folder = self.workspace.new_item()
        self._forget_removed()
        job = Job(item, folder, entry, image.path, mask.path if mask else None, options)
        try:
            self.queue.submit(job)
        except Exception:
            self.workspace.remove(item)
            raise
        with self._lock:
            self.jobs[item] = job
        return job

    def job(self, item: str) -> Job:
        self.workspace.folder(item)
        with self._lock:
            job = self.jobs.get(item)
        if job is None:
            raise DiffIRError(f"{item[:40]!r} is not a job")
        return job

    def _forget_removed(self) -> None:
        """Drop the records of uploads and jobs whose folders the workspace removed (old or over the limit)."""
        with self._lock:
            for table in (self.uploads, self.jobs):
                for item in [i for i in table if not self.workspace.exists(i)]:
                    del table[item]

    def _in_use(self) -> set[str]:
        """Uploads and result folders of queued and running jobs: kept when old items are removed."""
        used = set()
        for job in self.queue.active():
            used.add(job.id)
            used.update(p.parent.name for p in (job.image, job.mask) if p is not None)
        return used

    def _restore(self, job: Job) -> None:
        """Run on the worker thread: load the model once, restore the file into the job's folder."""
        from diffir.pipelines.restorer import Restorer

        job.stage = "loading"
        model = self._models.get(job.model.name)
        if model is None:
            from diffir.io.checkpoint import load_model

            model = self._models[job.model.name] = load_model(job.model.path)
        job.stage = "restoring"
        restorer = Restorer(model, device=self.settings.device, on_progress=job.report,
                            max_output_pixels=self.settings.max_output_pixels, **job.options)
        job.result = restore_file(restorer, job.image, job.folder, mask=job.mask,
                                  max_pixels=self.settings.max_pixels)

    # ------------------------------------------------------------------------------------------ previews
    def preview(self, source: Path) -> Path:
        """An 8-bit PNG of ``source`` next to it (made once): what the browser shows for every input format."""
        target = source.with_name(".preview.png")
        if not target.exists():
            pixels = read_image(source, max_pixels=self.settings.max_pixels).pixels
            write_image(target, to_8bit(pixels) if pixels.dtype == np.uint16 else pixels)
        return target

    def hide_paths(self, text: str) -> str:
        """``text`` with the workspace folders taken out, so that messages name the user's own file names."""
        return re.sub(re.escape(str(self.workspace.root)) + r"[/\\][0-9a-f]{16}[/\\]", "", text)


def _restore_options(request: dict[str, Any]) -> dict[str, Any]:
    """Restorer options from the page's values, checked by the same parsers as the CLI's options."""
    options: dict[str, Any] = {}
    parsers = {"tile": tile_size, "seed": seed, "outscale": scale_factor}
    for key, parse in parsers.items():
        value = request.get(key)
        if value is None or str(value).strip() == "":
            continue
        try:
            options[key] = parse(str(value).strip())
        except argparse.ArgumentTypeError as exc:
            raise DiffIRError(f"{key}: {exc}") from None
    precision = str(request.get("precision") or "fp32")
    if precision not in PRECISIONS:
        raise DiffIRError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    options["precision"] = precision
    return options
