"""Task state codes (``data.state``) exactly as the spec numbers them."""

from __future__ import annotations

from enum import IntEnum


class TaskState(IntEnum):
    CANCELLED = -13  # interrupted by a crash/restart too often
    EMPTY_RESULT = -11  # no person found
    TIMEOUT = -8
    INVALID_IMAGE = -7
    URL_TOO_LARGE = -5
    DOWNLOAD_FAILED = -3
    STORAGE_FAILED = -2
    FAILED = -1
    QUEUED = 0
    SUCCEEDED = 1
    PREPARING = 2
    WAITING = 3  # image_url downloaded, waiting for a worker
    PROCESSING = 4
    PUBLISHING = 5
    # -14 "input image content does not meet the requirements": over 4096 px a side.
    IMAGE_TOO_LARGE = -14

    @property
    def finished(self) -> bool:
        return self < 0 or self == TaskState.SUCCEEDED


# States a restart finds a task in when it was being worked on.
RUNNING_STATES = (TaskState.PREPARING, TaskState.WAITING, TaskState.PROCESSING, TaskState.PUBLISHING)
# States of a task that waits for a worker.
WAITING_STATES = (TaskState.QUEUED, TaskState.WAITING)


class TaskFailure(Exception):
    """Ends a task with ``state`` and a message for the client."""

    def __init__(self, state: TaskState, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message
