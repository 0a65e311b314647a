"""The access parts one process opens: the access database in the data dir, the counters (Redis when
configured, so every replica sees them), and whether keys are needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ragsvc.access.admission import Windows
from ragsvc.access.counters import Counters, RedisCounters, SqliteCounters
from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.identity import auth_required
from ragsvc.settings import Settings


@dataclass
class AccessControl:
    db: AccessDB
    counters: Counters
    required: bool
    openwebui_secret: str | None = None
    openwebui_group: str | None = None
    windows: Windows = Windows()

    def describe(self) -> str:
        """One line for the start-up log: which mode, and why."""
        if self.required:
            return "auth on: every request needs an API key (create one with `ragsvc keys create`)"
        return "auth off: single-user setup on loopback; set RAGSVC_AUTH=on to require API keys"

    def close(self) -> None:
        self.db.close()


def open_access(settings: Settings) -> AccessControl:
    db = AccessDB(Path(settings.data_dir) / ACCESS_DB)
    counters: Counters
    if settings.redis_url:
        import redis

        counters = RedisCounters(redis.Redis.from_url(settings.redis_url), settings.job_queue)
    else:
        counters = SqliteCounters(db)
    secret = settings.openwebui_jwt_secret
    return AccessControl(
        db=db,
        counters=counters,
        required=auth_required(settings.auth, settings.host),
        openwebui_secret=secret.get_secret_value() if secret else None,
        openwebui_group=settings.openwebui_user_group,
        windows=Windows(rate=settings.rate_window_seconds, budget=settings.budget_window_seconds),
    )
