"""``diffir serve`` through its HTTP API (in-process): uploads, jobs, results, errors, the queue, the workspace."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install -e '.[serve]'")

from starlette.testclient import TestClient  # noqa: E402

import diffir  # noqa: E402
from conftest import REPO, tiny_model  # noqa: E402
from diffir.bundled import DEFAULT_MODEL, list_bundled  # noqa: E402
from diffir.cli import main  # noqa: E402
from diffir.serve.app import create_app  # noqa: E402
from diffir.serve.service import Service, Settings  # noqa: E402
from diffir.serve.workspace import safe_name  # noqa: E402

SAMPLE = REPO / "samples" / "sr_x4" / "chelsea.png"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    diffir.save_model(tiny_model("diffir_sr_x4_s2"), folder / "tiny_sr.safetensors")
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), folder / "tiny_inpaint.safetensors")
    return folder


@pytest.fixture
def workspace_tmp(tmp_path, monkeypatch) -> Path:
    """Python's temporary folder for this test: the server may write there and nowhere else."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def client(models: Path, **settings) -> TestClient:
    return TestClient(create_app(Settings(models=models, device="cpu", **settings)))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(c: TestClient, data: bytes, name: str = "photo.png") -> dict:
    response = c.post(f"/api/uploads?name={name}", content=data)
    assert response.status_code == 200, response.text
    return response.json()


def run_job(c: TestClient, request: dict, timeout: float = 60) -> dict:
    response = c.post("/api/jobs", json=request)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = c.get(f"/api/jobs/{response.json()['id']}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job still {status['state']} after {timeout} s")


def error_of(response) -> str:
    body = response.json()
    assert set(body) >= {"error"} and "\n" not in body["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------------ happy paths
def test_models_list_bundled_first_then_the_models_folder(models) -> None:
    with client(models) as c:
        entries = c.get("/api/models").json()["models"]
    assert [e["group"] for e in entries] == ["bundled"] * len(list_bundled()) + ["installed", "installed"]
    assert entries[0]["name"] == DEFAULT_MODEL and entries[0]["default"] and entries[0]["description"]
    by_name = {e["name"]: e for e in entries}
    assert by_name["tiny_sr"]["task"] == "sr" and by_name["tiny_sr"]["scale"] == 4
    assert by_name["tiny_inpaint"]["needs_mask"] and not by_name["tiny_sr"]["needs_mask"]


def test_upload_restore_download_equals_the_cli(models, tmp_path, workspace_tmp) -> None:
    with client(models) as c:
        image = upload(c, SAMPLE.read_bytes(), "chelsea.png")
        assert (image["name"], image["width"], image["height"]) == ("chelsea.png", 112, 75)
        status = run_job(c, {"image": image["id"], "model": "tiny_sr", "tile": "48", "seed": "3"})
        assert status["state"] == "done", status
        assert status["stage"] == "tiles" and status["done"] == status["total"] > 1  # tile progress was reported
        result = c.get(status["result"]["download"])
        preview = c.get(status["result"]["preview"])
    assert result.headers["content-disposition"] == 'attachment; filename="chelsea_out.png"'
    assert Image.open(io.BytesIO(result.content)).size == (448, 300)
    assert Image.open(io.BytesIO(preview.content)).size == (448, 300)
    # The same pipeline as `diffir restore`: byte-identical output for the same options.
    assert main(["restore", "-i", str(SAMPLE), "-o", str(tmp_path / "cli"), "-m", str(models / "tiny_sr.safetensors"),
                 "--tile", "48", "--seed", "3", "-q", "--threads", "1"]) == 0
    assert (tmp_path / "cli" / "chelsea_out.png").read_bytes() == result.content


def test_format_and_bit_depth_of_the_input_are_kept(models, workspace_tmp) -> None:
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 65535, (20, 24), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray16).save(buffer, format="PNG")
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    with client(models) as c:
        for data, name, check in [
            (buffer.getvalue(), "deep.png", lambda im: im.mode in ("I;16", "I") and im.size == (48, 40)),
            (jpeg.getvalue(), "photo.jpg", lambda im: im.format == "JPEG" and im.size == (32, 32)),
        ]:
            status = run_job(c, {"image": upload(c, data, name)["id"], "model": "tiny_sr", "outscale": "2"})
            assert status["state"] == "done", status
            result = c.get(status["result"]["download"])
            assert check(Image.open(io.BytesIO(result.content))), name
            preview = Image.open(io.BytesIO(c.get(status["result"]["preview"]).content))
            assert preview.mode in ("L", "RGB")  # what a browser shows: 8 bits


def test_inpainting_keeps_every_known_pixel(models, workspace_tmp) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    holes = np.zeros((32, 32), np.uint8)
    holes[8:20, 10:22] = 255
    with client(models) as c:
        image, mask = upload(c, png(pixels)), upload(c, png(holes), "mask.png")
        status = run_job(c, {"image": image["id"], "mask": mask["id"], "model": "tiny_inpaint"})
        assert status["state"] == "done", status
        out = np.asarray(Image.open(io.BytesIO(c.get(status["result"]["download"]).content)))
    known = holes == 0
    assert np.array_equal(out[known], pixels[known])
    assert not np.array_equal(out[~known], pixels[~known])  # the holes were filled by the model


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_uploads_get_the_clis_one_line_errors_and_leave_nothing(models, workspace_tmp) -> None:
    good = SAMPLE.read_bytes()
    bomb = io.BytesIO()
    Image.new("L", (3000, 3000)).save(bomb, format="PNG")  # a few kB that decode to 9 MP
    with client(models, max_pixels=1_000_000) as c:
        cases = {
            "notes.png": (b"not an image at all", "notes.png: not an image file"),
            "cut.png": (good[: len(good) // 2], "cut.png: cannot decode image"),
            "empty.png": (b"", "empty.png: empty file"),
            "bomb.png": (bomb.getvalue(), "bomb.png"),
        }
        for name, (data, expected) in cases.items():
            response = c.post(f"/api/uploads?name={name}", content=data)
            assert response.status_code == 400 and error_of(response).startswith(expected), (name, response.text)
        assert "9,000,000" in c.post("/api/uploads?name=bomb.png", content=bomb.getvalue()).json()["error"]
        root = c.app.state.service.workspace.root
        assert list(root.iterdir()) == []  # every failed upload was removed at once


def test_upload_limit_is_enforced_while_streaming(models, workspace_tmp) -> None:
    with client(models, max_upload_bytes=4096) as c:
        response = c.post("/api/uploads?name=big.png", content=b"x" * 5000)
        assert response.status_code == 413 and "upload limit" in error_of(response)

        def chunks():  # no Content-Length: the limit must hold on the bytes as they arrive
            for _ in range(10):
                yield b"x" * 1000

        response = c.post("/api/uploads?name=big.png", content=chunks())
        assert response.status_code == 413
        assert list(c.app.state.service.workspace.root.iterdir()) == []


def test_mask_of_another_size_is_the_clis_message(models, tmp_path, workspace_tmp, capsys) -> None:
    image_file, mask_file = tmp_path / "face.png", tmp_path / "hole.png"
    image_file.write_bytes(png(np.zeros((16, 16, 3), np.uint8)))
    mask_file.write_bytes(png(np.full((8, 8), 255, np.uint8)))
    main(["restore", "-i", str(image_file), "--mask", str(mask_file), "-m", str(models / "tiny_inpaint.safetensors"),
          "-o", str(tmp_path / "out"), "-q", "--threads", "1"])
    cli_line = next(line for line in capsys.readouterr().err.splitlines() if "mask" in line and "diffir: error" in line)
    with client(models) as c:
        image = upload(c, image_file.read_bytes(), "face.png")
        mask = upload(c, mask_file.read_bytes(), "hole.png")
        response = c.post("/api/jobs", json={"image": image["id"], "mask": mask["id"], "model": "tiny_inpaint"})
    assert response.status_code == 400
    assert cli_line.replace(str(tmp_path) + "/", "") == f"diffir: error: {error_of(response)}"


def test_bad_requests_are_one_line(models, workspace_tmp) -> None:
    with client(models) as c:
        image = upload(c, SAMPLE.read_bytes())["id"]
        mask = upload(c, png(np.full((75, 112), 255, np.uint8)), "m.png")["id"]
        cases = [
            ({"image": image, "model": "nope"}, "unknown model 'nope'"),
            ({"image": "0123456789abcdef", "model": "tiny_sr"}, "unknown or expired"),
            ({"image": image, "model": "tiny_inpaint"}, "is an inpainting model"),
            ({"image": image, "mask": mask, "model": "tiny_sr"}, "a mask was given"),
            ({"image": image, "model": "tiny_sr", "tile": "-5"}, "tile:"),
            ({"image": image, "model": "tiny_sr", "outscale": "nan"}, "outscale:"),
            ({"image": image, "model": "tiny_sr", "precision": "fp8"}, "precision:"),
            ({"image": image, "model": "tiny_sr", "colour": "red"}, "unknown option(s) colour"),
        ]
        for request, expected in cases:
            response = c.post("/api/jobs", json=request)
            assert response.status_code == 400 and expected in error_of(response), (request, response.text)
        assert c.post("/api/jobs", content=b"{", headers={"content-type": "application/json"}).status_code == 400
        assert c.get("/api/jobs/../../etc/passwd").status_code == 404
        assert c.get("/api/jobs/0123456789abcdef").status_code == 404
        assert c.get(f"/api/jobs/{image}/result").status_code == 404  # an upload is not a job


def test_a_failing_job_reports_its_error_and_the_worker_goes_on(models, workspace_tmp) -> None:
    with client(models, max_output_pixels=10_000) as c:
        image = upload(c, SAMPLE.read_bytes(), "chelsea.png")["id"]
        failed = run_job(c, {"image": image, "model": "tiny_sr"})
        assert failed["state"] == "failed" and failed["error"].startswith("chelsea.png: restoring this 112x75 image")
        assert c.get(f"/api/jobs/{failed['id']}/result").status_code == 404
        small = upload(c, png(np.zeros((8, 8, 3), np.uint8)))["id"]  # 32x32 output: within the limit
        assert run_job(c, {"image": small, "model": "tiny_sr"})["state"] == "done"


# ------------------------------------------------------------------------------------------------ queue, files
def test_full_queue_answers_busy_with_the_jobs_ahead(models, workspace_tmp, monkeypatch) -> None:
    release = threading.Event()
    started = threading.Event()
    real = Service._restore

    def slow(self, job):
        started.set()
        assert release.wait(30)
        real(self, job)

    monkeypatch.setattr(Service, "_restore", slow)
    with client(models, queue_size=1) as c:
        image = upload(c, SAMPLE.read_bytes())["id"]
        request = {"image": image, "model": "tiny_sr", "outscale": "1"}
        first = c.post("/api/jobs", json=request).json()
        assert started.wait(30)
        second = c.post("/api/jobs", json=request)
        assert second.status_code == 202 and second.json()["ahead"] == 1
        status = c.get(f"/api/jobs/{second.json()['id']}").json()
        assert (status["state"], status["ahead"]) == ("queued", 1)
        third = c.post("/api/jobs", json=request)
        assert third.status_code == 503 and third.json()["ahead"] == 2
        assert error_of(third).startswith("busy: 2 jobs ahead")
        release.set()
        for job in (first, second.json()):
            deadline = time.monotonic() + 60
            while c.get(f"/api/jobs/{job['id']}").json()["state"] != "done":
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_nothing_is_written_outside_the_workspace_which_goes_at_shutdown(models, workspace_tmp, tmp_path,
                                                                         monkeypatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with client(models) as c:
        image = upload(c, SAMPLE.read_bytes())["id"]
        assert run_job(c, {"image": image, "model": "tiny_sr", "tile": "0"})["state"] == "done"
        root = c.app.state.service.workspace.root
        assert root.parent == workspace_tmp and len(list(root.iterdir())) == 2  # the upload and the job
    assert not root.exists()
    assert list(workspace_tmp.iterdir()) == [] and list(cwd.iterdir()) == []


def test_old_items_are_removed_but_not_those_of_waiting_jobs(models, workspace_tmp) -> None:
    service = Service(Settings(models=models))
    try:
        service.workspace.max_items = 3
        pinned, _ = service.workspace.new_item()
        service.workspace.in_use = lambda: {pinned}
        items = [service.workspace.new_item()[0] for _ in range(4)]
        alive = {p.name for p in service.workspace.root.iterdir()}
        assert pinned in alive and items[-1] in alive and items[0] not in alive
        # The records of removed uploads go too (a long-running server does not accumulate them).
        uploads = []
        for _ in range(4):
            item, path = service.new_upload("x.png")
            path.write_bytes(png(np.zeros((4, 4, 3), np.uint8)))
            uploads.append(service.check_upload(item, path).id)
        assert uploads[0] not in service.uploads and uploads[-1] in service.uploads
    finally:
        service.close()


@pytest.mark.parametrize(("name", "safe"), [
    ("../../etc/passwd", "passwd.png"), ("C:\\Users\\me\\photo.JPG", "photo.JPG"), (".hidden.png", "hidden.png"),
    ("a\nb\x1b[31m.png", "a_b__31m.png"), ("", "image.png"), ("x" * 300 + ".png", "x" * 90 + ".png"),
])
def test_upload_names_are_made_safe(name, safe) -> None:
    assert safe_name(name) == safe


def test_serve_command_errors_are_one_line(tmp_path, capsys) -> None:
    import socket

    assert main(["serve", "--models", str(tmp_path / "missing")]) == 2
    assert "--models" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffir: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1


def test_without_the_serve_extra_the_command_says_what_to_install(monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffir: error: diffir serve needs the serve extra (uvicorn is missing): pip install "
                          "'diffir-toolkit[serve]'") and err.count("\n") == 1
