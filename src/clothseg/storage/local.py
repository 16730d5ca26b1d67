"""Results on the local disk, one folder per task."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from clothseg.storage.base import StorageError, check_key


class LocalResultStore:
    """A folder: on one machine, or shared by several (NFS and the like) for scale-out."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as out:
            out.write(data)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        tmp = path.with_name(path.name + ".part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as out:
                yield out
            os.replace(tmp, path)  # readers never see a half-written file
        except OSError as exc:
            raise StorageError(f"cannot write result {key}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):  # gone already, or its folder could not be made
                tmp.unlink()

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

    def link(self, key: str, expires: int) -> None:
        """No direct URL for a file on disk: the API serves it under its own signed link."""
        check_key(key)
        return None
