"""End-to-end: a few hundred unusual and damaged files through the API.

Each one either becomes a task that ends in a documented state (never -1,
which means a bug) or is refused with a 4xx; the server never answers 5xx.
"""

from __future__ import annotations

from conftest import PHOTO, ServerFactory
from hostile import hostile_inputs, unusual_images
from PIL import Image

# Decoded inputs are segmented (1) or have nobody in them (-11); the rest are refused.
ACCEPTABLE_STATES = {1, -11, -7, -14}


def test_hostile_uploads_end_in_documented_states(server_factory: ServerFactory) -> None:
    srv = server_factory(max_queue="1000")
    key = srv.make_key(credits=1_000_000, qps=10_000)
    photo = Image.open(PHOTO).convert("RGB").resize((36, 54))  # small: decodable ones run the model quickly
    inputs = hostile_inputs(photo, seed=0)
    assert len(inputs) >= 250
    created: dict[str, str] = {}
    for name, data in inputs:
        resp = srv.create(key, {"class_type": "4", "output_type": "3"}, data, filename=name)
        assert resp.status_code < 500, (name, resp.text)
        if resp.status_code == 200:
            created[resp.json()["data"]["task_id"]] = name
        else:
            assert resp.status_code == 400 and resp.json()["status"] == 400, (name, resp.text)
    outcomes = {name: srv.wait(key, task_id) for task_id, name in created.items()}
    internal = {name: body["message"] for name, body in outcomes.items() if body["data"]["state"] == -1}
    assert not internal, internal
    unexpected = {name: (body["data"]["state"], body["message"]) for name, body in outcomes.items()
                  if body["data"]["state"] not in ACCEPTABLE_STATES}
    assert not unexpected, unexpected
    # Every valid file, whatever its format and mode, was read (segmented, or nobody found in it).
    unread = {name: outcomes[name]["message"] for name in unusual_images(photo)
              if outcomes[name]["data"]["state"] not in (1, -11)}
    assert not unread, unread
    # Headers that declare huge images are refused as too large before their pixels are read.
    assert all(outcomes[name]["data"]["state"] == -14 for name in outcomes if name.startswith("huge-")
               and "truncated" not in name)
