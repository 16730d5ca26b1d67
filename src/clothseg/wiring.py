"""The service's parts put together from its settings, once for every process
that runs them: an API node (`clothseg serve`) and a worker (`clothseg worker`).

Embedded (no CLOTHSEG_BROKER_URL): SQLite, results on the local disk, an
in-process QPS limiter, notifications and worker threads.  Scale-out: the
database, Redis, the object store and the broker each named by a setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from clothseg.accounts import Accounts, RateLimiter, RedisTokenBucketLimiter, TokenBucketLimiter
from clothseg.config import Settings
from clothseg.database import open_database
from clothseg.engine import load_engine
from clothseg.storage import LinkSigner, ResultStore, open_store
from clothseg.storage.signing import shared_secret
from clothseg.tasks import DownloadPool, TaskService, ThreadPoolDispatcher
from clothseg.tasks.dispatch import Dispatcher
from clothseg.tasks.notify import LocalNotifier, Notifier, RedisNotifier
from clothseg.tasks.roster import WorkerRoster


@dataclass(frozen=True)
class Services:
    settings: Settings
    sessions: sessionmaker
    accounts: Accounts
    limiter: RateLimiter
    store: ResultStore
    signer: LinkSigner
    dispatcher: Dispatcher
    downloads: DownloadPool
    notifier: Notifier
    tasks: TaskService
    # The scale-out's live `clothseg worker` processes (None: the embedded mode's threads).
    roster: WorkerRoster | None


def build_services(cfg: Settings, dispatcher: Dispatcher | None = None) -> Services:
    """Every part for ``cfg``; ``dispatcher`` overrides the one the settings name."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    sessions = open_database(cfg.database_url)
    accounts = Accounts(sessions)
    limiter: RateLimiter = (RedisTokenBucketLimiter(cfg.redis_url, cfg.redis_prefix) if cfg.redis_url
                            else TokenBucketLimiter())
    notifier: Notifier = RedisNotifier(cfg.redis_url, cfg.redis_prefix) if cfg.redis_url else LocalNotifier()
    store = open_store(cfg.storage_url, cfg.results_dir, cfg.storage_link_endpoint)
    signer = LinkSigner(shared_secret(sessions, cfg.data_dir / "secret.key"), cfg.result_ttl_seconds)
    if dispatcher is None:
        if cfg.distributed:
            from clothseg.tasks.celery_queue import CeleryDispatcher, make_celery

            dispatcher = CeleryDispatcher(make_celery(cfg))
        else:
            dispatcher = ThreadPoolDispatcher(cfg.workers)
    downloads = DownloadPool(cfg.downloads)
    tasks = TaskService(sessions, store, accounts, cfg, dispatcher, downloads, notifier,
                        lambda: load_engine(cfg.model_path or None, cfg.engine_threads))
    roster = WorkerRoster(cfg.redis_url, cfg.redis_prefix, cfg.lease_seconds) if cfg.distributed else None
    return Services(cfg, sessions, accounts, limiter, store, signer, dispatcher, downloads, notifier, tasks, roster)
