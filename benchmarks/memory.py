"""Peak memory of a real server under hostile input.

    python benchmarks/memory.py [--clients 8] [--seed 0] [--rounds 2] [--no-large] [--quality 2]

Starts ``clothseg serve`` on a free port and sends, from ``--clients``
threads at once:

1. the fuzz mix: the test suite's unusual and damaged files (tests/hostile.py)
   made from the photo at 54 px and at 1024 px high, ``--rounds`` times;
   image_url downloads of 29 MB of garbage (16 at once); 19.9 MB uploads of
   garbage; uploads over the 20 MB limit; decompression bombs;
2. unless ``--no-large``, the largest valid inputs: the photo at 4096 px high
   as JPEG, 16-bit PNG and camera raw, with random quality, detail and
   output options.

Every request asks for a random class_type, output_type and detail_mode, and a
quality up to ``--quality`` (1 shows what the input costs without the model's
test-time augmentation).

Prints the server's resident memory (VmRSS) at start, its peak (VmHWM, the
kernel's high-water mark) after each phase and at the end, and which requests
were in flight when the sampled RSS was highest.  Linux only.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import PHOTO, Server  # noqa: E402 - the tests' server runner and helpers
from hostile import hostile_inputs  # noqa: E402
from images import dng, encode  # noqa: E402

MB = 1024 * 1024
GARBAGE_URL_BYTES = 29 * MB


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class GarbageHost(BaseHTTPRequestHandler):
    """Serves 29 MB of garbage, as fast as it can."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(GARBAGE_URL_BYTES))
        self.end_headers()
        chunk = random.Random(0).randbytes(MB)
        try:
            for _ in range(GARBAGE_URL_BYTES // MB):
                self.wfile.write(chunk)
        except OSError:
            pass


@contextmanager
def garbage_host() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), GarbageHost)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def fuzz_mix(rounds: int, seed: int, url: str) -> list[tuple[str, bytes | str]]:
    """(name, upload bytes or image_url) of the hostile mix, shuffled."""
    photo = Image.open(PHOTO).convert("RGB")
    rng = random.Random(seed)
    mix: list[tuple[str, bytes | str]] = []
    for round_ in range(rounds):
        for height in (54, 1024):
            small = photo.resize((photo.width * height // photo.height, height))
            mix += hostile_inputs(small, seed=seed + round_)
    mix += [(f"url-garbage-{i}", url) for i in range(16)]
    mix += [(f"upload-garbage-{i}", rng.randbytes(20 * MB - 100 * 1024)) for i in range(4)]
    mix += [(f"upload-too-large-{i}", rng.randbytes(21 * MB)) for i in range(2)]
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, "PNG", optimize=True)
    mix += [(f"bomb-{i}", bomb.getvalue()) for i in range(4)]
    rng.shuffle(mix)
    return mix


def large_mix() -> list[tuple[str, bytes | str]]:
    """The largest valid inputs: 4096 px high."""
    photo = Image.open(PHOTO).convert("RGB")
    big = photo.resize((photo.width * 4096 // photo.height, 4096), Image.Resampling.BICUBIC)
    gray16 = Image.fromarray(np.asarray(big.convert("L"), np.uint16) * 257)
    raw_side = photo.resize((photo.width * 3000 // photo.height, 3000))  # a 4096 px DNG is over 20 MB
    return [("large-jpeg", encode(big, "JPEG", quality=90)), ("large-png-16bit", encode(gray16, "PNG")),
            ("large-dng", dng(np.asarray(raw_side))), ("large-jpeg-again", encode(big, "JPEG", quality=70))]


class Load:
    """Sends requests from client threads while sampling the server's RSS."""

    def __init__(self, server: Server, key: str, pid: int, max_quality: int) -> None:
        self.server, self.key, self.pid, self.max_quality = server, key, pid, max_quality
        self.in_flight: dict[int, str] = {}  # request number -> its name and options
        self.highest: tuple[float, list[str]] = (0.0, [])

    def send(self, number: int, name: str, source: bytes | str, rng: random.Random) -> str:
        """The final state of a task for ``source`` (or the HTTP status if refused)."""
        options = {"sync": "1", "class_type": str(rng.randint(1, 4)), "output_type": str(rng.randint(1, 3)),
                   "quality": str(rng.randint(1, self.max_quality)), "detail_mode": str(rng.randint(1, 2))}
        self.in_flight[number] = f"{name} (q{options['quality']}d{options['detail_mode']})"
        try:
            if isinstance(source, str):
                resp = self.server.create(self.key, {**options, "image_url": f"http://{source}/{name}"})
            else:
                resp = self.server.create(self.key, options, source, filename=name)
        except httpx.HTTPError as exc:
            return f"no answer ({type(exc).__name__})"
        finally:
            del self.in_flight[number]
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}"
        return f"state {resp.json()['data']['state']}"

    def run(self, mix: list[tuple[str, bytes | str]], clients: int, seed: int) -> Counter[str]:
        rng = random.Random(seed)
        seeds = [rng.random() for _ in mix]
        done = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(done,), daemon=True)
        sampler.start()
        with ThreadPoolExecutor(clients) as pool:
            outcomes = Counter(pool.map(lambda item: self.send(item[0], *item[1], random.Random(item[2])),
                                        [(i, m, s) for i, (m, s) in enumerate(zip(mix, seeds, strict=True))]))
        done.set()
        sampler.join()
        return outcomes

    def _sample(self, done: threading.Event) -> None:
        while not done.wait(0.05) and self.server.proc is not None and self.server.proc.poll() is None:
            rss = memory_mb(self.pid, "VmRSS")
            if rss > self.highest[0]:
                self.highest = (rss, list(self.in_flight.values()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-large", action="store_true", help="only the fuzz mix")
    p.add_argument("--quality", type=int, choices=(1, 2), default=2, help="the highest quality asked for")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as data_dir, garbage_host() as host:
        server = Server(Path(data_dir), {"CLOTHSEG_MAX_QUEUE": "1000", "CLOTHSEG_URL_ALLOWLIST": host})
        server.http.timeout = 600
        server.start()
        try:
            assert server.proc is not None
            pid = server.proc.pid
            key = server.make_key(credits=10**9, qps=10**6)
            print(f"server started: RSS {memory_mb(pid, 'VmRSS'):.0f} MB")
            load = Load(server, key, pid, args.quality)
            phases = [("fuzz mix", fuzz_mix(args.rounds, args.seed, host))]
            if not args.no_large:
                phases.append(("largest valid inputs", large_mix()))
            for phase, mix in phases:
                started = time.monotonic()
                outcomes = load.run(mix, args.clients, args.seed)
                if server.proc.poll() is not None:
                    sys.exit(f"the server died: {server.log.read_text()[-3000:]}")
                print(f"{phase}: {len(mix)} requests from {args.clients} clients in "
                      f"{time.monotonic() - started:.0f} s; peak RSS so far {memory_mb(pid, 'VmHWM'):.0f} MB, "
                      f"now {memory_mb(pid, 'VmRSS'):.0f} MB")
                print("   ", ", ".join(f"{outcome}: {n}" for outcome, n in sorted(outcomes.items())))
                rss, in_flight = load.highest
                print(f"    highest sampled RSS {rss:.0f} MB with in flight: {', '.join(sorted(in_flight))}")
            print(f"peak RSS {memory_mb(pid, 'VmHWM'):.0f} MB (limit 800 MB)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
