"""End-to-end: the published OpenAPI description is exact, checked by schemathesis.

Every check schemathesis has (status codes, content types, response bodies,
valid data accepted, invalid data refused, 405 with Allow, missing key 401, ...)
over a bounded, seeded run of a few hundred generated requests against the real
server.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ServerFactory


def test_the_server_does_what_its_openapi_says(server_factory: ServerFactory, tmp_path: Path) -> None:
    # Generated image URLs point anywhere: give up on them quickly.
    srv = server_factory(url_timeout="2", url_connect_timeout="1", max_queue="1000")
    key = srv.make_key(credits=1_000_000, qps=10_000)
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{srv.base_url}/openapi.json",
         "--header", f"X-API-KEY: {key}", "--checks", "all", "--max-examples", "30", "--seed", "1",
         "--generation-database", "none", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", run.stdout).groups())
    assert passed == generated >= 200

