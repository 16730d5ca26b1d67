"""``clothseg segment`` on files and folders, against a server and in-process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import CCP, Server
from PIL import Image

from clothseg.engine.taxonomy import CLASS_TYPES

PHOTOS = sorted((CCP / "photos").glob("*.jpg"))


def segment(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clothseg.cli", "segment", *args],
                          capture_output=True, text=True, timeout=300)


def outputs(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def expected(stems: list[str], class_type: int, with_zip: bool) -> set[str]:
    names = {f"{c}.png" for c in CLASS_TYPES[class_type]} | ({"clothes.zip"} if with_zip else set())
    return {f"{s}/{n}" for s in stems for n in names}


def test_folder_against_server_then_resume_and_report_failures(server: Server, key: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(CCP / "photos", photos)
    out = tmp_path / "out"
    run = segment(str(photos), "--server", server.base_url, "--key", key, "--class-type", "2",
                  "--output-type", "3", "--out", str(out))
    assert run.returncode == 0, run.stderr + run.stdout
    stems = [p.stem for p in PHOTOS]
    assert outputs(out) == expected(stems, 2, with_zip=True)
    assert f"{len(stems)} done" in run.stdout
    mask = np.asarray(Image.open(out / stems[0] / "clothes.png"))
    assert mask.shape == np.asarray(Image.open(PHOTOS[0])).shape[:2]

    # A second run skips what is complete; a broken file fails with its reason and a non-zero exit.
    (photos / "broken.jpg").write_bytes(b"not an image")
    again = segment(str(photos), "--server", server.base_url, "--key", key, "--class-type", "2",
                    "--output-type", "3", "--out", str(out))
    assert again.returncode == 1
    assert f"{len(stems)} skipped" in again.stdout and "1 failed" in again.stdout
    assert f"failed: {photos / 'broken.jpg'}: the file is not a decodable image" in again.stderr


def test_in_process_gives_the_same_layout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = segment(str(PHOTOS[0]), str(PHOTOS[1]), "--out", str(out), "--class-type", "4", "--output-type", "3")
    assert run.returncode == 0, run.stderr + run.stdout
    assert outputs(out) == expected([PHOTOS[0].stem, PHOTOS[1].stem], 4, with_zip=True)
    img = Image.open(out / PHOTOS[0].stem / "hair.png")
    assert img.mode == "L" and img.size == Image.open(PHOTOS[0]).size


def test_server_mode_needs_a_key(server: Server, tmp_path: Path) -> None:
    run = segment(str(PHOTOS[0]), "--server", server.base_url, "--out", str(tmp_path))
    assert run.returncode != 0 and "--key" in run.stderr
