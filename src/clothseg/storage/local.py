"""Results on the local disk, one folder per task."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from clothseg.storage.base import StorageError

_KEY = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*$")


class LocalResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            raise KeyError(key)
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers never see a half-written file
        except OSError as exc:
            raise StorageError(f"cannot write result {key}: {exc.strerror}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise KeyError(key) from exc
        except OSError as exc:
            raise StorageError(f"cannot read result {key}: {exc.strerror}") from exc

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # nothing stored there
            path.unlink()
