"""``diffir serve`` in a real headless Chromium: upload, restore with the bundled model, compare, download; paint a
mask with the mouse and inpaint with a tiny model; an error shown in the page.  Screenshots go to the test's
folder, and to ``$DIFFIR_SCREENSHOTS`` when set.

The browser: Playwright's own Chromium where it is installed (``playwright install chromium``), else the system's
(Debian: ``apt install chromium``).  Without either the tests skip with one line, except under CI, where they fail.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffir
from conftest import REPO, tiny_model
from diffir.bundled import DEFAULT_MODEL

SAMPLES = REPO / "samples"


def _browser_or_reason() -> tuple[str | None, str]:
    """(executable for Playwright or None = its own, "") or (None, why there is no browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, "Playwright is not installed (pip install -e '.[test]')"
    with sync_playwright() as p:
        if Path(p.chromium.executable_path).exists():
            return None, ""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name), ""
    return None, "no Chromium: `apt install chromium` or `playwright install chromium`"


EXECUTABLE, MISSING = _browser_or_reason()


@pytest.fixture(scope="module")
def browser():
    if MISSING:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {MISSING}")
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=EXECUTABLE, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``diffir serve`` on a free loopback port, with a tiny inpainting model in its models folder."""
    models = tmp_path_factory.mktemp("models")
    diffir.save_model(tiny_model("diffir_inpaint_celeba_s2"), models / "tiny_inpaint.safetensors")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("tmp"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "diffir", "serve", "--port", str(port), "--models", str(models), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"diffir serve did not start: {process.communicate()[0]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", Path(env["TMPDIR"])
    process.terminate()
    output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output
    assert list(Path(env["TMPDIR"]).iterdir()) == []  # the workspace is gone with the server


@pytest.fixture
def page(browser, server, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 760}, accept_downloads=True)
    page = context.new_page()
    page.goto(server[0])
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    folder = os.environ.get("DIFFIR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def wait_done(page) -> None:
    page.wait_for_selector("#download:not([hidden])", timeout=120_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()


def download(page, tmp_path: Path) -> Image.Image:
    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    return Image.open(path)


def test_upload_restore_compare_download(page, tmp_path) -> None:
    assert page.locator("#model").input_value() == DEFAULT_MODEL  # bundled model, preselected
    page.set_input_files("#file-input", str(SAMPLES / "sr_x4" / "chelsea.png"))
    page.wait_for_selector("#stage:not([hidden])")
    assert "chelsea.png: 112×75" in page.locator("#file-info").text_content()
    page.click("#restore")
    wait_done(page)
    assert "done in" in page.locator("#status").text_content()
    natural = page.eval_on_selector("#result-img", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [448, 300]
    # The comparison slider: dragging moves the split between before and after.
    box = page.locator("#stage").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    clip = page.eval_on_selector("#before-clip", "e => e.getBoundingClientRect().width")
    assert clip == pytest.approx(box["width"] * 0.3, abs=3)
    page.click("[data-zoom='2']")
    assert page.locator("#stage").bounding_box()["width"] == pytest.approx(896, abs=1)
    page.click("[data-zoom='fit']")
    screenshot(page, tmp_path, "serve_compare.png")
    result = download(page, tmp_path)
    assert result.size == (448, 300) and result.format == "PNG"


def test_paint_a_mask_and_inpaint(page, tmp_path) -> None:
    page.select_option("#model", "tiny_inpaint")
    assert page.locator("#mask-tools").is_visible()
    source = SAMPLES / "inpaint" / "astronaut.png"
    page.set_input_files("#file-input", str(source))
    page.wait_for_selector("#mask-canvas:not([hidden])")
    assert page.locator("#restore").is_disabled()  # no hole painted yet
    page.click("[data-zoom='1']")
    box = page.locator("#mask-canvas").bounding_box()
    page.fill("#brush-size", "20")
    # Two strokes, the second undone: only the first one is a hole.
    for y in (100, 200):
        page.mouse.move(box["x"] + 60, box["y"] + y)
        page.mouse.down()
        page.mouse.move(box["x"] + 180, box["y"] + y, steps=8)
        page.mouse.up()
    page.click("#undo")
    screenshot(page, tmp_path, "serve_mask.png")
    page.click("#restore")
    wait_done(page)
    screenshot(page, tmp_path, "serve_inpaint.png")
    result = np.asarray(download(page, tmp_path).convert("RGB")).astype(int)
    original = np.asarray(Image.open(source).convert("RGB")).astype(int)
    changed = np.abs(result - original).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 1000  # the stroke's pixels were filled by the model
    # Only around the first stroke (y = 100, x 60..180, brush 20): the undone one and the rest are untouched.
    assert ys.min() >= 100 - 12 and ys.max() <= 100 + 12 and xs.min() >= 60 - 12 and xs.max() <= 180 + 12


def test_errors_are_shown_in_the_page(page, tmp_path) -> None:
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"this is not an image")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").text_content().startswith("holiday.png: not an image file")
    # A good image after a bad one works; a mask of the wrong size is refused with the CLI's message.
    page.select_option("#model", "tiny_inpaint")
    page.set_input_files("#file-input", str(SAMPLES / "inpaint" / "astronaut.png"))
    page.wait_for_selector("#mask-canvas:not([hidden])")
    small = io.BytesIO()
    Image.new("L", (64, 64), 255).save(small, format="PNG")
    page.set_input_files("#mask-input", files=[{"name": "small_mask.png", "mimeType": "image/png",
                                                "buffer": small.getvalue()}])
    page.wait_for_function("document.getElementById('mask-info').textContent.includes('small_mask.png')")
    page.click("#restore")
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#error").text_content() == ("astronaut.png: mask small_mask.png is 64x64 but the image is "
                                                     "256x256; give a mask of the image's size")


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_drop_and_paste_upload_the_image(page, how) -> None:
    data = list((SAMPLES / "sr_x4" / "chelsea.png").read_bytes())
    # What the browser hands the page when a file is dropped on the zone or pasted from the clipboard.
    page.evaluate("""([how, bytes]) => {
        const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        const event = how === "drop"
            ? new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true})
            : new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true});
        (how === "drop" ? document.getElementById("drop") : document).dispatchEvent(event);
    }""", [how, data])
    page.wait_for_function("document.getElementById('file-info').textContent.includes('112×75')")
    assert page.locator("#file-info").text_content() == "dropped.png: 112×75"
    page.wait_for_selector("#restore:enabled")  # after the preview is shown
