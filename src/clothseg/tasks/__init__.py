"""Tasks and their queue: the lifecycle of a segmentation request."""

from clothseg.tasks.dispatch import Dispatcher, ThreadPoolDispatcher
from clothseg.tasks.download import DownloadPool
from clothseg.tasks.service import ZIP_NAME, IdempotencyConflict, Job, QueueFull, TaskService
from clothseg.tasks.states import TaskState

__all__ = ["ZIP_NAME", "Dispatcher", "DownloadPool", "IdempotencyConflict", "Job", "QueueFull", "TaskService",
           "TaskState", "ThreadPoolDispatcher"]
