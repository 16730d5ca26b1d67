"""The task queue of the scale-out: Celery over a Redis or RabbitMQ broker.

A message carries only a task id; the database stays the source of truth.
A message may be delivered twice (a worker killed before acknowledging, a
task recovered after its lease ran out): the worker's atomic claim makes the
second delivery a no-op, so nothing runs or is charged twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from sqlalchemy.exc import DBAPIError

from clothseg.config import Settings
from clothseg.tasks.dispatch import QueueUnavailable

log = logging.getLogger("clothseg.tasks")

SEGMENT_TASK = "clothseg.segment"


def make_celery(settings: Settings) -> Celery:
    app = Celery("clothseg", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_ignore_result=True,
        # A message is acknowledged when its task has ended, and given back if the
        # worker process dies holding it: a kill -9 loses nothing.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # An unacknowledged message goes back to the queue (Redis broker) after this long;
        # recovery by lease usually re-queues the task well before that.
        broker_transport_options={"visibility_timeout": settings.task_timeout_seconds * 2 + 60},
        broker_connection_timeout=3,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for a broker that went away
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,  # no pidbox queues on the broker
    )
    return app


class CeleryDispatcher:
    """Publishes task ids for ``clothseg worker`` processes; runs nothing itself."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def submit(self, task_id: str) -> None:
        try:
            # No publish retries: a create call with the broker down fails now, not in a minute.
            self._app.send_task(SEGMENT_TASK, args=[task_id], retry=False)
        except (OperationalError, KombuError, OSError) as exc:
            raise QueueUnavailable(f"the task queue (broker) is unreachable: {exc}") from exc

    def check(self) -> None:
        """Raise QueueUnavailable if the broker cannot be reached (for /healthz)."""
        try:
            with self._app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
        except (OperationalError, KombuError, OSError) as exc:
            raise QueueUnavailable(f"the broker is unreachable: {exc}") from exc

    def start(self, run: Callable[[str], None]) -> None:
        pass  # workers are other processes

    def stop(self) -> None:
        pass


def register_worker_task(app: Celery, run: Callable[[str], None]) -> None:
    """Make ``app``'s workers call ``run(task_id)`` for each message.  When the database is
    unreachable (restarting), the message is retried later rather than dropped."""

    @app.task(name=SEGMENT_TASK, bind=True, max_retries=None, acks_late=True)
    def segment(self, task_id: str) -> None:  # type: ignore[no-untyped-def]
        try:
            run(task_id)
        except DBAPIError as exc:
            log.warning("database unreachable; task retried", extra={"task_id": task_id, "error": str(exc)})
            raise self.retry(countdown=2) from exc
