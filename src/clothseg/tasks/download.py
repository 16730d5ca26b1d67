"""Where ``image_url`` downloads run: coroutines on an event loop of their own.

A download waits on the network, not the CPU, so it must not hold a worker:
a server trickling a byte a second would otherwise stall every task queued
behind it.  Here a slow download holds one of ``slots`` coroutines; when it
is done the task goes to the workers' queue like an uploaded image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from anyio.from_thread import BlockingPortal, start_blocking_portal


class DownloadPool:
    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)  # binds to the pool's loop on first use
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._download: Callable[[str], Awaitable[None]] | None = None

    def start(self, download: Callable[[str], Awaitable[None]]) -> None:
        """Begin running ``download(task_id)`` (which never raises) for submitted ids."""
        self._download = download
        self._portal_cm = start_blocking_portal(name="clothseg-downloads")
        self._portal = self._portal_cm.__enter__()

    def submit(self, task_id: str) -> None:
        assert self._portal is not None, "DownloadPool.start() first"
        self._portal.start_task_soon(self._run, task_id)

    async def _run(self, task_id: str) -> None:
        assert self._download is not None
        async with self._slots:
            await self._download(task_id)

    def stop(self) -> None:
        """Cancel downloads in flight: their tasks are re-queued on the next start."""
        if self._portal is None or self._portal_cm is None:
            return
        self._portal.call(self._portal.stop, True)
        self._portal_cm.__exit__(None, None, None)  # joins the loop's thread
        self._portal = self._portal_cm = None
