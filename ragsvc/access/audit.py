"""The audit log: admin actions and denied requests (who, what, when, outcome). It never holds document text,
questions or secrets: callers pass names and ids only."""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel

from ragsvc.access.db import AccessDB

log = logging.getLogger("ragsvc.audit")


class AuditEntry(BaseModel):
    at: float
    actor: str  # 'user:NAME', 'key:ID', 'anonymous', 'cli'
    action: str  # e.g. 'keys.create', 'collections.delete', 'POST /collections/{name}/search'
    target: str
    outcome: str  # ok | denied | unauthorized | rate_limited
    detail: str = ""


def record(db: AccessDB, actor: str, action: str, target: str, outcome: str, detail: str = "") -> None:
    entry = AuditEntry(
        at=time.time(), actor=actor, action=action, target=target, outcome=outcome, detail=detail
    )
    with db.write() as tx:
        tx.execute(
            "INSERT INTO audit (at, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (entry.at, actor, action, target, outcome, detail),
        )
    log.info("audit", extra=entry.model_dump())


def entries(db: AccessDB, *, since: float = 0.0, limit: int = 1000) -> list[AuditEntry]:
    rows = db.read(
        "SELECT at, actor, action, target, outcome, detail FROM audit WHERE at >= ? ORDER BY at DESC LIMIT ?",
        (since, limit),
    )
    keys = ("at", "actor", "action", "target", "outcome", "detail")
    return [AuditEntry(**dict(zip(keys, r, strict=True))) for r in rows]
