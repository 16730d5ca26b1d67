"""What a sync request costs beyond the task's own work, in the embedded mode.

    python benchmarks/api_overhead.py [--runs 30] [--threads 2]

Starts a real `clothseg serve` (SQLite, one worker) on a free port, sends
``--runs`` sync requests (class_type 4, output_type 1) of the 1024 px-long
photo that benchmarks/latency.py uses, one after another, and prints p50/p95 of
the request's wall time, the task's own time from the server's
``clothseg_task_seconds`` histogram (claim -> decode -> engine -> PNGs -> stored
-> finished), and the difference: HTTP, form parsing, the task record, the
queue hand-off, the wake-up of the waiting request and the answer.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TASKS = "/api/tasks/visual/clothing-segmentation"


def task_seconds(http: httpx.Client) -> tuple[float, float]:
    """(sum, count) of the server's clothseg_task_seconds histogram."""
    values = {}
    for line in http.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("clothseg_task_seconds_sum", "clothseg_task_seconds_count"):
            values[name] = float(value)
    return values["clothseg_task_seconds_sum"], values["clothseg_task_seconds_count"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    img = Image.open(ROOT / "tests/data/ccp/photos/0040.jpg").convert("RGB")
    scale = 1024 / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    photo = buf.getvalue()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "CLOTHSEG_ENGINE_THREADS": str(args.threads), "CLOTHSEG_WORKERS": "1"}
        env.pop("CLOTHSEG_DATABASE_URL", None)
        key = subprocess.run([sys.executable, "-m", "clothseg.cli", "keys", "create", "--credits", "100000",
                              "--qps", "1000", "--data-dir", data_dir], env=env, capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        server = subprocess.Popen([sys.executable, "-m", "clothseg.cli", "serve", "--port", str(port),
                                   "--data-dir", data_dir], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
            deadline = time.monotonic() + 90
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)

            def request() -> float:
                started = time.perf_counter()
                body = http.post(TASKS, headers={"X-API-KEY": key}, data={"sync": "1", "class_type": "4"},
                                 files={"image_file": ("photo.jpg", photo, "image/jpeg")}).json()
                assert body["data"]["state"] == 1, body
                return time.perf_counter() - started

            for _ in range(3):  # warm-up: caches, first allocations
                request()
            sum0, count0 = task_seconds(http)
            walls = [request() for _ in range(args.runs)]
            sum1, count1 = task_seconds(http)
        finally:
            server.terminate()
            server.wait(timeout=30)

    task_mean = (sum1 - sum0) / (count1 - count0)
    wall_p50 = statistics.median(walls)
    wall_p95 = statistics.quantiles(walls, n=20)[-1]
    print(f"photo {img.width}x{img.height}, {args.runs} sync requests, class_type 4, {args.threads} engine threads")
    print(f"request wall time  p50 {wall_p50 * 1000:6.1f} ms   p95 {wall_p95 * 1000:6.1f} ms")
    print(f"task's own time    mean {task_mean * 1000:6.1f} ms")
    print(f"API overhead       p50 {(wall_p50 - task_mean) * 1000:6.1f} ms  (mean "
          f"{(statistics.fmean(walls) - task_mean) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
