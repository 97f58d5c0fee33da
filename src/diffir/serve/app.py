"""The HTTP side of ``diffir serve`` (Starlette): the page, its static files and a small JSON API.

    POST /api/uploads?name=photo.jpg   body: the file's bytes  -> {id, name, width, height, warnings}
    GET  /api/uploads/{id}/preview     an 8-bit PNG the browser can show
    GET  /api/models                   bundled models first, then the installed ones
    POST /api/jobs                     {image, mask, model, tile, precision, seed, outscale} -> 202 {id, ahead}
    GET  /api/jobs/{id}                state, jobs ahead, tiles done, error, warnings, result size
    GET  /api/jobs/{id}/result         the result, in the input's format and bit depth (a download)
    GET  /api/jobs/{id}/preview        the result as an 8-bit PNG

Errors are ``{"error": one line}`` with 400 (bad input), 404 (unknown id), 413 (too large) or 503 (queue full).
The uploaded bytes are streamed into the workspace with the size limit enforced as they come, so no upload is
written anywhere else and none is held in memory whole.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from diffir.errors import DiffIRError, describe_failure, one_line
from diffir.serve.jobs import Job, QueueFull, route_warnings
from diffir.serve.service import Service, Settings

STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings = Settings()) -> Starlette:  # noqa: B008 - frozen dataclass, never mutated
    """The app; its :class:`Service` (workspace, queue, worker) starts and stops with the app's lifespan."""
    state: dict[str, Service] = {}

    def service() -> Service:
        return state["service"]

    def error(exc: BaseException, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": one_line(service().hide_paths(describe_failure(exc)))}, status_code=status)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def models(request: Request) -> Response:
        entries = await run_in_threadpool(service().models)
        return JSONResponse({"models": [e.as_json() for e in entries]})

    async def upload(request: Request) -> Response:
        limit = service().settings.max_upload_bytes
        too_large = f"the file is larger than the upload limit of {limit / 2**20:g} MB (diffir serve --max-upload-mb N)"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return JSONResponse({"error": too_large}, status_code=413)
        item, path = service().new_upload(request.query_params.get("name", "image.png"))
        size = 0
        try:
            with open(path, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        break
                    f.write(chunk)
            if size > limit:
                service().workspace.remove(item)
                return JSONResponse({"error": too_large}, status_code=413)
            entry = await run_in_threadpool(service().check_upload, item, path)
        except (DiffIRError, OSError, MemoryError) as exc:
            service().workspace.remove(item)
            return error(exc)
        except BaseException:  # e.g. the browser went away mid-upload: no partial file stays behind
            service().workspace.remove(item)
            raise
        return JSONResponse({"id": entry.id, "name": entry.name, "width": entry.width, "height": entry.height,
                             "warnings": [service().hide_paths(w) for w in entry.warnings]})

    async def upload_preview(request: Request) -> Response:
        try:
            entry = service().upload(request.path_params["item"])
            return FileResponse(await run_in_threadpool(service().preview, entry.path), media_type="image/png")
        except (DiffIRError, OSError) as exc:
            return error(exc, 404)

    async def submit(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the request body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the request body must be a JSON object"}, status_code=400)
        try:
            job = await run_in_threadpool(service().submit, body)
        except QueueFull as exc:
            return JSONResponse({"error": str(exc), "ahead": exc.ahead}, status_code=503)
        except (DiffIRError, OSError) as exc:
            return error(exc)
        return JSONResponse(status(job), status_code=202)

    def status(job: Job) -> dict:
        body = {"id": job.id, "state": job.state, "ahead": service().queue.ahead(job), "stage": job.stage,
                "done": job.done, "total": job.total, "model": job.model.name, "seconds": round(job.seconds, 2),
                "warnings": [one_line(service().hide_paths(w)) for w in job.warnings]}
        if job.error:
            body["error"] = one_line(service().hide_paths(job.error))
        if job.state == "done" and job.result is not None:
            body["result"] = {"name": job.result.name, "download": f"/api/jobs/{job.id}/result",
                              "preview": f"/api/jobs/{job.id}/preview"}
        return body

    async def job_status(request: Request) -> Response:
        try:
            return JSONResponse(status(service().job(request.path_params["item"])))
        except DiffIRError as exc:
            return error(exc, 404)

    def finished(request: Request) -> Job:
        job = service().job(request.path_params["item"])
        if job.state != "done" or job.result is None:
            raise DiffIRError(f"job {job.id} is {job.state}, it has no result")
        return job

    async def result(request: Request) -> Response:
        try:
            job = finished(request)
        except DiffIRError as exc:
            return error(exc, 404)
        return FileResponse(job.result, filename=job.result.name)  # Content-Disposition: attachment

    async def result_preview(request: Request) -> Response:
        try:
            job = finished(request)
            return FileResponse(await run_in_threadpool(service().preview, job.result), media_type="image/png")
        except (DiffIRError, OSError) as exc:
            return error(exc, 404)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state["service"] = Service(settings)
        app.state.service = state["service"]
        with route_warnings():
            try:
                yield
            finally:
                state["service"].close()

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/models", models),
            Route("/api/uploads", upload, methods=["POST"]),
            Route("/api/uploads/{item}/preview", upload_preview),
            Route("/api/jobs", submit, methods=["POST"]),
            Route("/api/jobs/{item}", job_status),
            Route("/api/jobs/{item}/result", result),
            Route("/api/jobs/{item}/preview", result_preview),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
