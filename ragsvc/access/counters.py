"""Rate and budget counters every process sees: fixed windows (a minute, a UTC day) in the access database,
or in Redis when one is configured. A draw on several counters is one atomic step: all or none."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ragsvc.access.db import AccessDB

if TYPE_CHECKING:
    import redis

MINUTE = 60
DAY = 86_400


@dataclass(frozen=True)
class Draw:
    """`amount` drawn on `bucket` in the current window of `period` seconds; refused past `limit`."""

    bucket: str
    period: int
    amount: int
    limit: int | None = None


@dataclass(frozen=True)
class Refusal:
    draw: Draw
    used: int
    retry_after: int  # seconds until the window that refused it ends


def window(period: int, now: float) -> int:
    return int(now // period)


def seconds_left(period: int, now: float) -> int:
    return max(1, math.ceil((window(period, now) + 1) * period - now))


class Counters(Protocol):
    def take(self, draws: Sequence[Draw], now: float | None = None) -> Refusal | None:
        """Add every draw, unless one would pass its limit: then add none and say which."""
        ...

    def add(self, draws: Sequence[Draw], now: float | None = None) -> None:
        """Add every draw whatever the limits (settling what a request really used)."""
        ...

    def used(self, draws: Sequence[Draw], now: float | None = None) -> list[int]: ...


class SqliteCounters:
    def __init__(self, db: AccessDB) -> None:
        self.db = db

    def _step(self, draws: Sequence[Draw], now: float, check: bool) -> Refusal | None:
        with self.db.write() as tx:
            current = []
            for draw in draws:
                win = window(draw.period, now)
                row = tx.execute(
                    "SELECT amount FROM counters WHERE bucket = ? AND win = ?", (draw.bucket, win)
                ).fetchone()
                used = row[0] if row else 0
                if check and draw.limit is not None and used + draw.amount > draw.limit:
                    return Refusal(draw, used, seconds_left(draw.period, now))
                current.append((draw, win))
            for draw, win in current:
                tx.execute("DELETE FROM counters WHERE bucket = ? AND win < ?", (draw.bucket, win))
                tx.execute(
                    "INSERT INTO counters (bucket, win, amount) VALUES (?, ?, ?)"
                    " ON CONFLICT (bucket, win) DO UPDATE SET amount = amount + excluded.amount",
                    (draw.bucket, win, draw.amount),
                )
        return None

    def take(self, draws: Sequence[Draw], now: float | None = None) -> Refusal | None:
        return self._step(draws, time.time() if now is None else now, check=True)

    def add(self, draws: Sequence[Draw], now: float | None = None) -> None:
        self._step(draws, time.time() if now is None else now, check=False)

    def used(self, draws: Sequence[Draw], now: float | None = None) -> list[int]:
        now = time.time() if now is None else now
        found = []
        for draw in draws:
            rows = self.db.read(
                "SELECT amount FROM counters WHERE bucket = ? AND win = ?",
                (draw.bucket, window(draw.period, now)),
            )
            found.append(rows[0][0] if rows else 0)
        return found


# KEYS: one counter per draw; ARGV: amount, limit (-1: none) per draw, then the TTL per draw, then check (1/0).
_TAKE = """
local n = #KEYS
local check = tonumber(ARGV[3 * n + 1])
if check == 1 then
  for i = 1, n do
    local limit = tonumber(ARGV[n + i])
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    if limit >= 0 and used + tonumber(ARGV[i]) > limit then return {i, used} end
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * n + i])
end
return {0, 0}
"""


class RedisCounters:
    """The same counters in Redis (one key per bucket and window, expiring after it), for replicas."""

    def __init__(self, client: redis.Redis, namespace: str = "ragsvc") -> None:
        self._redis = client
        self._prefix = f"{namespace}:counters:"
        self._script = client.register_script(_TAKE)

    def _keys(self, draws: Sequence[Draw], now: float) -> list[str]:
        return [f"{self._prefix}{d.bucket}@{window(d.period, now)}" for d in draws]

    def _run(self, draws: Sequence[Draw], now: float, check: bool) -> Refusal | None:
        if not draws:
            return None
        args = [d.amount for d in draws] + [-1 if d.limit is None else d.limit for d in draws]
        args += [seconds_left(d.period, now) + 60 for d in draws] + [1 if check else 0]
        index, used = self._script(keys=self._keys(draws, now), args=args)
        if index:
            draw = draws[int(index) - 1]
            return Refusal(draw, int(used), seconds_left(draw.period, now))
        return None

    def take(self, draws: Sequence[Draw], now: float | None = None) -> Refusal | None:
        return self._run(draws, time.time() if now is None else now, check=True)

    def add(self, draws: Sequence[Draw], now: float | None = None) -> None:
        self._run(draws, time.time() if now is None else now, check=False)

    def used(self, draws: Sequence[Draw], now: float | None = None) -> list[int]:
        now = time.time() if now is None else now
        values = self._redis.mget(self._keys(draws, now)) if draws else []
        return [int(v or 0) for v in values]
