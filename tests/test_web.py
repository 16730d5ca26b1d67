"""The web page at ``/`` in real headless Chromium (Debian's package, driven by Playwright).

One server, one browser and one photo host serve the whole module; each test opens a fresh
browser context and fails if the page logged any console error or warning it did not expect.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PHOTO, Server, ServerFactory
from PIL import Image

from clothseg.engine.taxonomy import CLASS_TYPES

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Without these, Chromium keeps calling home, which this closed network refuses.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
STEM = PHOTO.stem  # downloads are named after the photo: 0040-hair.png
PHOTO_SIZE = Image.open(PHOTO).size


def ensure_chromium() -> str:
    """Debian's Chromium, installed on first use (a fresh machine does not have it)."""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True, check=True)
    return CHROMIUM


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def photo_host() -> Iterator[str]:
    """host:port of another site serving the test photos (no CORS headers, like most sites)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(PHOTO.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory, photo_host: str) -> Server:
    # The photo host is on loopback, so the operator's allow-list must name it.
    return server_factory(url_allowlist=photo_host)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    path = ensure_chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def console() -> list[str]:
    """Console errors and warnings of the page; a test empties it of those it expects."""
    return []


def open_page(browser: Any, server: Server, console: list[str], **context: Any) -> Iterator[Any]:
    page = browser.new_context(accept_downloads=True, **context).new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    # Intercept file pickers from the start: Playwright enables that on the first listener, and
    # a picker opened before the enabling call lands would never be reported.
    page.on("filechooser", lambda chooser: None)
    page.goto(server.base_url + "/")
    yield page
    page.context.close()
    assert console == [], "the page logged to the console"


@pytest.fixture
def page(browser: Any, server: Server, console: list[str]) -> Iterator[Any]:
    yield from open_page(browser, server, console, viewport=DESKTOP)


@pytest.fixture
def phone(browser: Any, server: Server, console: list[str]) -> Iterator[Any]:
    yield from open_page(browser, server, console, viewport=PHONE, is_mobile=True, has_touch=True)


def wait_done(page: Any) -> None:
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=90_000)
    assert page.is_visible("#result"), page.text_content("#error")


def segment(page: Any, key: str, class_type: str = "4") -> None:
    page.fill("#api-key", key)
    page.set_input_files("#file-input", str(PHOTO))
    page.select_option("#class-type", class_type)
    page.click("#submit")
    wait_done(page)


def overlay_pixels(page: Any) -> int:
    """Pixels the coloured overlay covers (read from a copy: the page's canvas is never read)."""
    return page.evaluate("""() => {
        const overlay = document.getElementById('overlay');
        const ctx = document.createElement('canvas').getContext('2d', { willReadFrequently: true });
        ctx.canvas.width = overlay.width; ctx.canvas.height = overlay.height; ctx.drawImage(overlay, 0, 0);
        const px = ctx.getImageData(0, 0, overlay.width, overlay.height).data;
        let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
        return n; }""")


def download(page: Any, click: Any) -> tuple[str, bytes]:
    """(suggested file name, bytes) of the download a click starts."""
    with page.expect_download() as info:
        click()
    return info.value.suggested_filename, Path(info.value.path()).read_bytes()


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def legend_names(page: Any) -> list[str]:
    return page.eval_on_selector_all("#legend li", "items => items.map((li) => li.dataset.class)")


def test_upload_shows_overlay_legend_sliders_and_downloads(page: Any, server: Server, key: str) -> None:
    assert page.is_hidden("#result")  # no empty result box on load
    assert server.http.get(page.get_attribute("link[rel=icon]", "href")).status_code == 200
    segment(page, key)
    assert page.text_content("#status").startswith("Done in ")
    meta = page.text_content("#result-meta")
    assert "Done in " in meta and "credits left" in meta and "for 1 hour, until" in meta
    assert legend_names(page) == list(CLASS_TYPES[4])
    # Beside the image and visible without scrolling at 1280x900.
    stack, legend = page.locator("#stack").bounding_box(), page.locator("#legend").bounding_box()
    assert legend["x"] >= stack["x"] + stack["width"] and legend["y"] + legend["height"] <= DESKTOP["height"]
    for name in CLASS_TYPES[4]:
        row = page.locator(f"[data-class={name}]")
        assert row.locator(".share").text_content().endswith("%")
        assert page.get_by_role("link", name=f"Download {name} mask").count() == 1
    summary = page.text_content("#summary")
    assert summary.startswith("Found (share of the photo): ") and "tops" in summary
    assert page.get_attribute("#photo", "alt") == f"Your photo, {PHOTO.name}"

    # Composites start off; toggles, all and none redraw the overlay.
    assert not page.is_checked("[data-class=head] input") and not page.is_checked("[data-class=clothes] input")
    shown = overlay_pixels(page)
    assert shown > 5000
    page.uncheck("[data-class=tops] input")
    assert overlay_pixels(page) < shown
    page.click("#hide-all")
    assert overlay_pixels(page) == 0
    page.click("#show-all")
    assert page.is_checked("[data-class=clothes] input") and overlay_pixels(page) > shown

    page.fill("#opacity", "30")
    assert page.eval_on_selector("#overlay", "c => c.style.opacity") == "0.3"
    assert page.text_content("#opacity-value") == "30%"
    page.fill("#compare", "40")  # the overlay covers the left 40%, the original shows on the right
    assert page.eval_on_selector("#overlay", "c => getComputedStyle(c).clipPath") == "inset(0px 60% 0px 0px)"
    assert page.is_visible("#divider")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"))

    name, data = download(page, page.get_by_role("link", name="Download hair mask").click)
    assert name == f"{STEM}-hair.png"
    assert png(data).mode == "L" and png(data).size == PHOTO_SIZE
    name, data = download(page, page.get_by_role("link", name="Download Clothing ZIP").click)
    assert name == f"{STEM}-clothes.zip" and "manifest.json" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    # The key stays in the browser for the next visit.
    page.reload()
    assert page.input_value("#api-key") == key


def test_every_class_set_lists_its_classes_and_a_zip_only_with_clothing(page: Any, key: str) -> None:
    for class_type in (1, 2, 3):
        segment(page, key, str(class_type))
        assert legend_names(page) == list(CLASS_TYPES[class_type])
        assert page.is_visible("#zip-link") == (class_type != 3)


def test_cutout_keeps_the_chosen_classes_of_the_photo(page: Any, key: str) -> None:
    segment(page, key)
    masks = [np.asarray(png(download(page, page.get_by_role("link", name=f"Download {c} mask").click)[1]))
             for c in ("tops", "bottoms")]
    page.click("#hide-all")
    page.check("[data-class=tops] input")
    page.check("[data-class=bottoms] input")
    page.check("input[name=view][value=cutout]")
    page.wait_for_function("document.getElementById('stack').dataset.cutout === '2'")
    assert page.eval_on_selector("#photo", "p => getComputedStyle(p).maskImage").startswith('url("blob:')
    assert page.is_hidden("#overlay") and page.is_disabled("#opacity")

    name, data = download(page, page.get_by_role("button", name="Download Cut-out PNG").click)
    assert name == f"{STEM}-cutout.png"
    cutout = png(data)
    assert cutout.mode == "RGBA" and cutout.size == PHOTO_SIZE
    pixels = np.asarray(cutout)
    alpha, kept = pixels[..., 3], np.maximum(*masks)
    assert ((alpha > 0) == (kept > 0)).all()  # transparent exactly outside tops and bottoms
    inside = kept == 255
    assert inside.sum() > 5000 and (alpha[inside] == 255).all()
    photo = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[..., :3][inside].astype(np.int16) - photo[inside]).mean() < 3  # the photo's own pixels


def test_download_all_is_one_zip_of_every_file(page: Any, key: str) -> None:
    segment(page, key)
    page.fill("#opacity", "100")
    name, data = download(page, lambda: page.click("#download-all"))
    assert name == f"{STEM}-clothseg.zip"
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None  # every CRC checks
    masks = {f"{STEM}-{c}.png" for c in CLASS_TYPES[4]}
    assert set(archive.namelist()) == masks | {f"{STEM}-{n}" for n in ("clothes.zip", "overlay.png", "cutout.png")}
    for member in masks:
        mask = png(archive.read(member))
        assert mask.mode == "L" and mask.size == PHOTO_SIZE
    overlay = png(archive.read(f"{STEM}-overlay.png"))
    assert overlay.size == PHOTO_SIZE and np.asarray(overlay)[..., 3].min() == 255  # the photo, fully opaque
    assert png(archive.read(f"{STEM}-cutout.png")).mode == "RGBA"
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(archive.read(f"{STEM}-clothes.zip"))).namelist()


def test_photo_from_another_site_shows_its_result(page: Any, key: str, photo_host: str) -> None:
    url = f"http://{photo_host}/{PHOTO.name}"
    page.fill("#api-key", key)
    page.fill("#image-url", url)
    page.press("#image-url", "Enter")  # a real form: Enter submits
    wait_done(page)
    assert page.get_attribute("#photo", "src") == url
    assert page.eval_on_selector("#photo", "p => p.naturalWidth") == PHOTO_SIZE[0]
    assert overlay_pixels(page) > 5000
    assert "another site" in page.text_content("#photo-note")
    page.check("input[name=view][value=cutout]")
    page.wait_for_function("document.getElementById('stack').dataset.cutout > 0")
    # The browser may not read that photo's pixels: the downloads hold the layer and the matte.
    name, data = download(page, lambda: page.click("#download-all"))
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert {f"{STEM}-overlay-layer.png", f"{STEM}-cutout-matte.png", f"{STEM}-hair.png"} <= set(archive.namelist())
    matte = np.asarray(png(archive.read(f"{STEM}-cutout-matte.png")))
    assert matte.shape[:2] == PHOTO_SIZE[::-1] and matte[..., 0].min() == 0 and matte[..., 0].max() == 255


def test_a_format_the_browser_cannot_display_still_gets_its_masks(page: Any, key: str) -> None:
    tiff = io.BytesIO()
    Image.open(PHOTO).save(tiff, format="TIFF")
    page.fill("#api-key", key)
    page.set_input_files("#file-input", {"name": "scan.tif", "mimeType": "image/tiff", "buffer": tiff.getvalue()})
    page.click("#submit")
    wait_done(page)
    assert page.is_hidden("#photo") and overlay_pixels(page) > 5000  # the masks on grey
    assert "cannot display" in page.text_content("#photo-note")
    assert page.is_disabled("input[name=view][value=cutout]")
    name, data = download(page, page.get_by_role("button", name="Download Cut-out PNG").click)
    assert name == "scan-cutout-matte.png" and png(data).size == PHOTO_SIZE


def test_errors_say_what_happened_and_what_to_do(page: Any, key: str, console: list[str]) -> None:
    page.click("#submit")
    error = page.text_content("#error")
    assert error.startswith("Enter your API key first.") and "clothseg keys create" in error
    assert page.evaluate("document.activeElement.id") == "api-key"

    page.fill("#api-key", "cs_wrong")
    page.click("#submit")
    assert page.text_content("#error").startswith("Choose a photo first")
    page.set_input_files("#file-input", str(PHOTO))
    page.click("#submit")
    page.wait_for_function("document.getElementById('error').textContent.includes('not accepted')")
    error = page.text_content("#error")
    assert "clothseg keys create" in error and "401" not in error
    # The balance line asks again after the run and says the same.
    page.wait_for_function("document.querySelector('.balance').textContent.includes('not accepted')")

    # A sample in one click, then a file that is no image: the old result goes, the error says why.
    page.fill("#api-key", key)
    # A sample click is ignored while a run is busy: let the refused run wind down first.
    page.wait_for_selector("#submit:not([disabled])")
    page.click("[data-sample='0071.jpg']")
    wait_done(page)
    assert page.text_content("#result-title") == "Result: 0071.jpg"
    page.set_input_files("#file-input", {"name": "bad.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"})
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    error = page.text_content("#error")
    assert error.startswith("This file is not an image the server can read.") and "state" not in error
    assert page.is_hidden("#result")

    # A file that is plainly no photo is refused before anything is sent.
    page.set_input_files("#file-input", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    assert page.text_content("#error") == ("“notes.txt” is not a photo. Choose a JPEG, PNG, WebP, BMP, TIFF "
                                           "or camera raw file.")

    # Chrome notes each refused request (the key's balance, the run, the balance again) in the
    # console on its own schedule, long done by now: those notes are the only console lines.
    refused = [line for line in console if "status of 401" in line]
    assert refused, "the browser noted no refused request"
    console[:] = [line for line in console if line not in refused]


def test_keyboard_alone_goes_from_key_to_result(page: Any, key: str) -> None:
    focused = "document.activeElement.id"
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "api-key"
    page.keyboard.type(key)
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "drop-zone"
    for press in ("Space", "Enter"):  # both open the file picker
        with page.expect_file_chooser() as chooser:
            page.keyboard.press(press)
        chooser.value.set_files(str(PHOTO))
    assert page.text_content("#file-name") == f"Chosen: {PHOTO.name}"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # submits the form from the key field
    wait_done(page)
    assert page.evaluate(focused) == "result-title"  # focus follows the result
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#legend') !== null"):
            break
    assert page.evaluate("document.activeElement.closest('li').dataset.class") == "hair"
    before = overlay_pixels(page)
    page.keyboard.press("Space")
    assert not page.is_checked("[data-class=hair] input") and overlay_pixels(page) < before


def test_phone_width_has_no_sideways_scroll_and_shows_the_result(phone: Any, key: str) -> None:
    page = phone
    width = "document.documentElement.scrollWidth"
    assert page.evaluate(width) <= PHONE["width"] and page.is_hidden("#result")
    page.fill("#api-key", key)
    page.click("[data-sample='0040.jpg']")
    wait_done(page)
    assert page.evaluate(width) <= PHONE["width"]
    # The page scrolled to the result: its title near the top, the whole image on screen.
    title, stack = page.locator("#result-title").bounding_box(), page.locator("#stack").bounding_box()
    assert 0 < title["y"] < PHONE["height"] / 3
    assert stack["y"] + stack["height"] <= PHONE["height"] and stack["width"] <= PHONE["width"]


def test_paste_and_drop_choose_the_photo(page: Any, key: str) -> None:
    put = """([event, name, b64]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], name, { type: 'image/jpeg' }));
        const init = { bubbles: true, cancelable: true };
        const target = event === 'paste' ? document.body : document.getElementById('drop-zone');
        target.dispatchEvent(event === 'paste' ? new ClipboardEvent('paste', { ...init, clipboardData: data })
                                               : new DragEvent('drop', { ...init, dataTransfer: data }));
    }"""
    photo = base64.b64encode(PHOTO.read_bytes()).decode()
    page.evaluate(put, ["paste", "image.png", photo])
    assert page.text_content("#file-name") == "Chosen: image.png"
    page.evaluate(put, ["drop", "dropped.jpg", photo])
    assert page.text_content("#file-name") == "Chosen: dropped.jpg"
    page.fill("#api-key", key)
    page.select_option("#class-type", "3")
    page.click("#submit")
    wait_done(page)
    assert legend_names(page) == list(CLASS_TYPES[3])
    assert page.get_attribute("[data-class=hair] a", "download") == "dropped-hair.png"


def test_account_endpoint_reports_the_keys_own_balance(server: Server, photo: bytes) -> None:
    key = server.make_key(credits=10, qps=5)
    account = server.http.get("/api/account", headers={"X-API-KEY": key}).json()
    assert account == {"status": 200, "message": "success",
                       "data": {"credits": 10, "held": 0, "available": 10, "task_cost": 3, "qps": 5.0}}
    assert server.create(key, {"sync": "1"}, photo).json()["data"]["state"] == 1
    assert server.http.get("/api/account", headers={"X-API-KEY": key}).json()["data"]["available"] == 7
    for headers in ({}, {"X-API-KEY": "cs_wrong"}):
        response = server.http.get("/api/account", headers=headers)
        assert response.status_code == 401 and response.json()["status"] == 401
