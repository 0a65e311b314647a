"""Rate limits and daily budgets, set per group, key or collection: stored, read, and combined over the groups
a user is in. Drawing on them is ragsvc.access.admission's work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from indexes.errors import InvalidRequest
from ragsvc.access.db import AccessDB

ScopeKind = Literal["group", "key", "collection"]


class Limits(BaseModel):
    rpm: int | None = None
    tpm: int | None = None
    daily_credits: float | None = None


def set_limits(db: AccessDB, scope_kind: ScopeKind, scope: str, limits: Limits) -> None:
    for name, value in limits.model_dump().items():
        if value is not None and value < 0:
            raise InvalidRequest(f"{name} must not be negative")
    with db.write() as tx:
        tx.execute(
            "INSERT OR REPLACE INTO limits (scope_kind, scope, rpm, tpm, daily_credits) VALUES (?, ?, ?, ?, ?)",
            (scope_kind, scope, limits.rpm, limits.tpm, limits.daily_credits),
        )


def get_limits(db: AccessDB, scope_kind: ScopeKind, scope: str) -> Limits | None:
    rows = db.read(
        "SELECT rpm, tpm, daily_credits FROM limits WHERE scope_kind = ? AND scope = ?", (scope_kind, scope)
    )
    return Limits(rpm=rows[0][0], tpm=rows[0][1], daily_credits=rows[0][2]) if rows else None


def group_limits(db: AccessDB, groups: tuple[str, ...]) -> Limits:
    """A user in several groups gets, for each limit, the most generous value any of them sets."""
    found = [lim for g in groups if (lim := get_limits(db, "group", g)) is not None]

    def most(values: list[float | int | None]) -> float | int | None:
        set_values = [v for v in values if v is not None]
        return max(set_values) if set_values else None

    return Limits(
        rpm=most([f.rpm for f in found]),
        tpm=most([f.tpm for f in found]),
        daily_credits=most([f.daily_credits for f in found]),
    )
