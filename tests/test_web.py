"""The web page at ``/`` in real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PHOTO, Server
from PIL import Image

from clothseg.engine.taxonomy import CLASS_TYPES

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Without these, Chromium keeps calling home, which this closed network refuses.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    """Debian's Chromium, installed on first use (a fresh machine does not have it)."""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True, check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    path = ensure_chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server: Server):  # type: ignore[no-untyped-def]
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(server.base_url + "/")
    yield page
    context.close()


def wait_done(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("document.getElementById('canvas').dataset.drawn > 0", timeout=90_000)


def changed_pixels(page) -> int:  # type: ignore[no-untyped-def]
    """Pixels of the result canvas that differ from the bare photo."""
    return page.evaluate("""() => {
        const c = document.getElementById('canvas');
        const ref = document.createElement('canvas'); ref.width = c.width; ref.height = c.height;
        const rctx = ref.getContext('2d'); rctx.drawImage(photo, 0, 0);
        const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const b = rctx.getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < a.length; i += 4) if (Math.abs(a[i] - b[i]) > 8) n++;
        return n; }""")


def test_upload_shows_overlay_legend_and_downloads(page, key: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#api-key", key)
    page.set_input_files("#file-input", str(PHOTO))
    page.select_option("#class-type", "4")
    page.click("#submit")
    wait_done(page)
    assert page.text_content("#status") == "Done."
    legend = page.locator("#legend li")
    assert legend.count() == len(CLASS_TYPES[4])
    assert changed_pixels(page) > 5000  # the overlay is drawn on the photo
    # Toggling every class off leaves the bare photo.
    for box in page.locator("#legend input[type=checkbox]").all():
        box.set_checked(False)
    assert changed_pixels(page) == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#legend input[type=checkbox]").first.set_checked(True)
    page.locator("[data-class=tops] input").set_checked(True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
    # Each mask and the ZIP download.
    with page.expect_download() as dl:
        page.click("[data-class=hair] a")
    png = Image.open(dl.value.path())
    assert png.mode == "L" and png.size == Image.open(PHOTO).size
    with page.expect_download() as dl:
        page.click("#zip-link")
    assert Path(dl.value.path()).read_bytes()[:2] == b"PK"
    # The key stays in the browser for the next visit.
    page.reload()
    assert page.input_value("#api-key") == key


def test_drag_and_drop(page, key: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#api-key", key)
    data = base64.b64encode(PHOTO.read_bytes()).decode()
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.jpg', { type: 'image/jpeg' }));
        document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true }));
    }""", data)
    assert page.text_content("#file-name") == "dropped.jpg"
    page.select_option("#class-type", "3")
    page.click("#submit")
    wait_done(page)
    assert page.locator("#legend li").count() == len(CLASS_TYPES[3])


def test_errors_are_shown_in_words(page, key: str) -> None:  # type: ignore[no-untyped-def]
    page.click("#submit")
    assert "API key" in page.text_content("#error")
    page.fill("#api-key", "cs_wrong")
    page.set_input_files("#file-input", str(PHOTO))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    page.wait_for_function("document.getElementById('error').textContent.includes('401')")
    assert "invalid or revoked API key" in page.text_content("#error")
    # A task that fails (not an image) reports its state in words.
    page.fill("#api-key", key)
    buf = io.BytesIO(b"not an image")
    page.set_input_files("#file-input", {"name": "bad.jpg", "mimeType": "image/jpeg", "buffer": buf.getvalue()})
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.includes('state -7')", timeout=60_000)
    assert "not a decodable image" in page.text_content("#error")
