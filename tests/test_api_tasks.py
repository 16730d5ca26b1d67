"""End-to-end: creating tasks and reading results over real HTTP."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import zipfile

import httpx
import numpy as np
import pytest
from conftest import TASKS, Server
from PIL import Image

from clothseg.engine.taxonomy import API_CLASSES, CLASS_TYPES

# The same tests against the embedded server and against the scale-out (two API
# nodes taking requests in turn, two Celery workers, PostgreSQL, Redis, a shared
# results folder) with each broker.
TOPOLOGIES = ("embedded", "redis", "amqp")


def fetch_png(url: str) -> np.ndarray:
    resp = httpx.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(resp.content))
    assert img.mode == "L"  # 8-bit grayscale
    return np.asarray(img)


def test_sync_returns_every_class_as_soft_grayscale_png_at_input_size(server: Server, key: str, photo: bytes) -> None:
    resp = server.create(key, {"sync": "1", "class_type": "4"}, photo)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == 200 and body["message"] == "success"
    data = body["data"]
    assert data["state"] == 1 and data["progress"] == 100 and data["output_type"] == 1
    for field in ("created_at", "processed_at", "completed_at"):
        assert isinstance(data[field], str) and data[field].isdigit()
    assert int(data["created_at"]) <= int(data["processed_at"]) <= int(data["completed_at"])
    assert set(data["class_masks"]) == set(API_CLASSES)
    assert "clothes_masks" not in data
    w, h = Image.open(io.BytesIO(photo)).size
    masks = {name: fetch_png(url) for name, url in data["class_masks"].items()}
    for name, mask in masks.items():
        assert mask.shape == (h, w), name
    # Soft edges: intermediate values exist, not just 0/255.
    clothes = masks["clothes"]
    assert ((clothes > 10) & (clothes < 245)).sum() > 100
    # A photo of a dressed person: clothes and head cover real areas.
    assert (clothes > 127).mean() > 0.05
    assert (masks["head"] > 127).mean() > 0.003
    # head covers hair and face.
    assert (masks["head"].astype(int) + 3 >= np.maximum(masks["hair"], masks["face"])).mean() > 0.99


@pytest.mark.parametrize("class_type", [1, 2, 3])
def test_class_type_selects_the_documented_classes(server: Server, key: str, photo: bytes, class_type: int) -> None:
    data = server.create(key, {"sync": 1, "class_type": class_type}, photo).json()["data"]
    assert data["state"] == 1
    assert set(data["class_masks"]) == set(CLASS_TYPES[class_type])


def test_defaults_are_async_class_type_1_output_type_1(server: Server, key: str, photo: bytes) -> None:
    body = server.create(key, {}, photo).json()
    assert body["status"] == 200
    assert set(body["data"]) == {"task_id"}
    done = server.wait(key, body["data"]["task_id"])
    assert done["data"]["output_type"] == 1
    assert set(done["data"]["class_masks"]) == set(CLASS_TYPES[1])


def test_async_task_reports_progress_then_completes(server: Server, key: str, photo: bytes) -> None:
    # quality 2 + detail 2 takes long enough to observe the intermediate states.
    body = server.create(key, {"sync": 0, "quality": 2, "detail_mode": 2, "class_type": 4}, photo).json()
    task_id = body["data"]["task_id"]
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        data = server.task(key, task_id).json()["data"]
        seen.append((data["state"], data["progress"]))
        assert data["task_id"] == task_id and data["created_at"].isdigit()
        if data["state"] == 1:
            break
        assert data["state"] in (0, 2, 4, 5)
        assert "class_masks" not in data
        time.sleep(0.05)
    assert seen[-1] == (1, 100)
    progresses = [p for _, p in seen]
    assert progresses == sorted(progresses)  # never goes backwards
    assert len(set(progresses)) >= 2  # and moves
    assert any(state in (2, 4, 5) for state, _ in seen)


def test_output_type_3_returns_masks_and_zip_with_manifest(server: Server, key: str, photo: bytes) -> None:
    data = server.create(key, {"sync": 1, "output_type": 3, "class_type": 2}, photo).json()["data"]
    assert data["state"] == 1 and data["output_type"] == 3
    assert set(data["class_masks"]) == set(CLASS_TYPES[2])
    resp = httpx.get(data["clothes_masks"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(resp.content))
    manifest = json.loads(zf.read("manifest.json"))["categories"]
    assert manifest, "a dressed person has at least one clothing category"
    w, h = Image.open(io.BytesIO(photo)).size
    for entry in manifest:
        mask = np.asarray(Image.open(io.BytesIO(zf.read(entry["file"]))))
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        assert entry["area"] == int((mask >= 128).sum())
        x0, y0, x1, y1 = entry["bbox"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert set(zf.namelist()) == {"manifest.json"} | {e["file"] for e in manifest}


def test_output_type_2_returns_only_the_zip(server: Server, key: str, photo: bytes) -> None:
    data = server.create(key, {"sync": 1, "output_type": 2}, photo).json()["data"]
    assert data["state"] == 1
    assert "class_masks" not in data and data["clothes_masks"].startswith(server.base_url)


def test_return_base64_inlines_the_pngs(server: Server, key: str, photo: bytes) -> None:
    data = server.create(key, {"sync": 1, "class_type": 3, "return_base64": 1, "output_type": 3},
                         photo).json()["data"]
    w, h = Image.open(io.BytesIO(photo)).size
    for value in data["class_masks"].values():
        img = Image.open(io.BytesIO(base64.b64decode(value)))
        assert img.mode == "L" and img.size == (w, h)
    assert zipfile.ZipFile(io.BytesIO(base64.b64decode(data["clothes_masks"]))).read("manifest.json")


def test_result_links_are_signed(server: Server, key: str, photo: bytes) -> None:
    data = server.create(key, {"sync": 1, "class_type": 3}, photo).json()["data"]
    url = data["class_masks"]["hair"]
    assert httpx.get(url).status_code == 200
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    resp = httpx.get(tampered)
    assert resp.status_code == 404 and resp.json()["status"] == 404
    other = url.replace("/hair.png", "/face.png")  # a valid signature for another object
    assert httpx.get(other).status_code == 404
    unsigned = url.split("?")[0]
    assert httpx.get(unsigned).status_code == 404
    for expires in ("abc", "-1", "1e9", "", "١٢٣"):  # not a number of seconds: an invalid link, not a bad request
        malformed = re.sub(r"expires=\d+", f"expires={expires}", url)
        resp = httpx.get(malformed)
        assert resp.status_code == 404 and resp.json()["message"] == "invalid result link", expires


def test_numbers_may_be_sent_as_strings_or_numbers(server: Server, key: str, photo: bytes) -> None:
    for value in ("3", " 3 ", "3.0"):
        data = server.create(key, {"sync": "1", "class_type": value}, photo).json()["data"]
        assert set(data["class_masks"]) == set(CLASS_TYPES[3]), value


def test_openapi_docs_describe_the_create_form(server: Server) -> None:
    assert server.http.get("/docs").status_code == 200
    spec = server.http.get("/openapi.json").json()
    form = spec["paths"][TASKS]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image_file", "image_url", "sync", "detail_mode", "output_type", "quality",
            "class_type", "return_base64"} <= set(form["properties"])
    sources = [set(branch["required"]) for branch in form["oneOf"]]  # exactly one image source
    assert sources == [{"image_file"}, {"image_url"}] and "exactly one" in form["description"].lower()
    assert TASKS + "/{task_id}" in spec["paths"]


def test_healthz_and_metrics(server: Server, key: str, photo: bytes) -> None:
    server.create(key, {"sync": 1}, photo)
    health = server.http.get("/healthz").json()
    assert health["data"]["queue_depth"] >= 0
    # Embedded: the worker threads; scale-out: the live `clothseg worker` processes.
    workers = len(getattr(server, "workers", [None]))
    assert health["data"]["workers"] == workers
    expected = {"database": "ok", "qps_limiter": "ok", "storage": "ok", "queue": "ok"}
    assert health["data"]["components"] == expected | ({"workers": "ok"} if hasattr(server, "workers") else {})
    text = server.http.get("/metrics").text
    for name in ("clothseg_http_requests_total", "clothseg_task_seconds_bucket", "clothseg_queue_depth",
                 "clothseg_task_failures_total"):
        assert name in text
    assert f'route="{TASKS}"' in text
