"""Every line the server writes is JSON, native libraries' output included."""

from __future__ import annotations

import io
import json
import time

from conftest import ServerFactory

from clothseg.observability import relay


def test_the_relay_passes_json_drops_start_up_noise_and_wraps_the_rest() -> None:
    record = '{"time": "t", "level": "INFO", "name": "clothseg.tasks", "message": "task created"}'
    native = [
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "W0000 00:00:1796186034.232529    6733 inference_feedback_manager.cc:114] Feedback manager requires "
        "a model with a single signature inference. Disabling support for feedback tensors.",
        "E0000 00:00:1796186034.232529    6733 graph.cc:9] something native went wrong",
        "Fax4Decode: Bad code word at line 9 of strip 0 (x 33).",
        "",
    ]
    out = io.StringIO()
    relay(io.StringIO("\n".join([record, *native]) + "\n"), out)
    lines = out.getvalue().splitlines()
    assert lines[0] == record
    wrapped = [json.loads(line) for line in lines[1:]]
    assert [(r["level"], r["name"], r["message"]) for r in wrapped] == [
        ("ERROR", "native", native[3]), ("WARNING", "native", native[4])]


def test_every_line_of_a_real_server_log_is_json(server_factory: ServerFactory, photo: bytes) -> None:
    srv = server_factory()
    key = srv.make_key()
    done = srv.create(key, {"sync": 1}, photo).json()["data"]
    refused = srv.create(key, {"sync": 1}, b"II*\x00 not really a TIFF").json()["data"]
    assert (done["state"], refused["state"]) == (1, -7)
    srv.stop()  # SIGTERM: the relay process drains what is left and ends with the server
    deadline = time.monotonic() + 10
    while refused["task_id"] not in srv.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    records = [json.loads(line) for line in srv.log.read_text().splitlines()]
    assert all(isinstance(r, dict) and {"time", "level", "name", "message"} <= set(r) for r in records)
    finished = {r["task_id"] for r in records if r["message"] == "task finished"}
    assert {done["task_id"], refused["task_id"]} <= finished
    # Start-up and per-task noise of the model's libraries is gone, not merely wrapped.
    text = " ".join(r["message"] for r in records)
    for noise in ("XNNPACK", "absl::InitializeLog", "Feedback manager", "GetPrototype"):
        assert noise not in text
