"""Batch segmentation of files and folders, against a server or in-process.

Both forms write the same layout (``OUT/<image stem>/<class>.png`` and
``clothes.zip``), skip images whose outputs are already complete (so an
interrupted run resumes), show a Rich progress bar with per-file status, and
end with a summary table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clothseg.client import ZIP_NAME, write_outputs
from clothseg.engine.taxonomy import CLASS_TYPES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".rgb",
                            ".sgi", ".dng", ".cr2", ".nef", ".arw", ".raw"})

# Segment one image: path -> (class name -> PNG bytes, ZIP bytes or None).
Segmenter = Callable[[Path], tuple[dict[str, bytes], bytes | None]]


@dataclass
class Outcome:
    path: Path
    status: str  # "done", "skipped", "failed"
    detail: str = ""
    seconds: float = 0.0


def discover(paths: Iterable[Path]) -> list[Path]:
    """Image files among ``paths``; folders are searched recursively."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found


def expected_outputs(class_type: int, output_type: int) -> list[str]:
    names = [f"{c}.png" for c in CLASS_TYPES[class_type]] if output_type in (1, 3) else []
    return names + ([ZIP_NAME] if output_type in (2, 3) else [])


class QpsGate:
    """Spaces out task creations to at most ``qps`` per second across threads."""

    def __init__(self, qps: float) -> None:
        self._interval = 1.0 / qps if qps > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(max(0.0, start - now))


def run_batch(images: list[Path], out: Path, segment: Segmenter, expected: list[str],
              concurrency: int = 1, console: Console | None = None) -> list[Outcome]:
    console = console or Console(stderr=True)
    stems: dict[str, Path] = {}
    outcomes: list[Outcome] = []
    todo: list[Path] = []
    for path in images:
        if path.stem in stems:
            outcomes.append(Outcome(path, "failed", f"same name as {stems[path.stem]}: outputs would collide"))
        elif all((out / path.stem / name).exists() for name in expected):
            stems[path.stem] = path
            outcomes.append(Outcome(path, "skipped", "outputs already exist"))
        else:
            stems[path.stem] = path
            todo.append(path)

    def one(path: Path) -> Outcome:
        start = time.monotonic()
        try:
            masks, zip_bytes = segment(path)
            write_outputs(out / path.stem, masks, zip_bytes)
            return Outcome(path, "done", f"{len(masks)} masks", time.monotonic() - start)
        except Exception as exc:  # noqa: BLE001 - reported per file, the batch goes on
            return Outcome(path, "failed", str(exc) or type(exc).__name__, time.monotonic() - start)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("segmenting", total=len(todo), last="")
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for fut in as_completed([pool.submit(one, p) for p in todo]):
                outcome = fut.result()
                outcomes.append(outcome)
                mark = "[green]ok[/]" if outcome.status == "done" else "[red]failed[/]"
                progress.update(bar, advance=1, last=f"{outcome.path.name}: {mark}")
    return outcomes


def summary_table(outcomes: list[Outcome]) -> Table:
    table = Table("file", "status", "detail", "seconds", title="clothseg segment")
    style = {"done": "green", "skipped": "yellow", "failed": "red"}
    for o in sorted(outcomes, key=lambda o: str(o.path)):
        table.add_row(str(o.path), f"[{style[o.status]}]{o.status}[/]", o.detail,
                      f"{o.seconds:.1f}" if o.seconds else "")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    table.caption = ", ".join(f"{n} {s}" for s, n in counts.items())
    return table
