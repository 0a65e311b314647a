"""API keys: 256 random bits from `secrets`, shown once, stored only as a SHA-256 hash, compared in constant
time; each has a name, an optional expiry, a last-used time, and can be revoked.

A key reads `rsk_<id>_<secret>`: the id (public, 64 bits) finds the row, the secret is checked against its
hash. A fast hash is right here: the secret is random, not a password, so there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from pydantic import BaseModel

from indexes.errors import RagsvcError
from ragsvc.access.db import AccessDB
from ragsvc.access.principals import get_user

PREFIX = "rsk_"
KEY = re.compile(r"rsk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# last_used_at is written at most this often per key, so that every request does not write to the database.
LAST_USED_RESOLUTION_S = 60.0


class KeyNotFound(RagsvcError):
    code = "key_not_found"


class ApiKey(BaseModel):
    """What is shown of a key after it is made: never its secret."""

    id: str
    user: str
    name: str
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None
    forwards_identity: bool = False

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class NewKey(BaseModel):
    key: ApiKey
    secret: str  # the whole key, shown once


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    db: AccessDB,
    user: str,
    name: str,
    *,
    expires_in: float | None = None,
    forwards_identity: bool = False,
) -> NewKey:
    """A new key for `user`; `forwards_identity` lets it speak for the users a chat UI signs (Open WebUI)."""
    get_user(db, user)
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = time.time()
    expires_at = now + expires_in if expires_in else None
    with db.write() as tx:
        tx.execute(
            "INSERT INTO api_keys (id, user, name, hash, created_at, expires_at, forwards_identity)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key_id, user, name, _hash(secret), now, expires_at, forwards_identity),
        )
    return NewKey(key=get_key(db, key_id), secret=f"{PREFIX}{key_id}_{secret}")


_COLUMNS = "id, user, name, created_at, expires_at, last_used_at, revoked_at, forwards_identity"


def _key(row: tuple) -> ApiKey:
    return ApiKey(**dict(zip(_COLUMNS.split(", "), row, strict=True)))


def get_key(db: AccessDB, key_id: str) -> ApiKey:
    rows = db.read(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
    if not rows:
        raise KeyNotFound(f"key {key_id!r} does not exist")
    return _key(rows[0])


def list_keys(db: AccessDB, user: str | None = None) -> list[ApiKey]:
    if user is None:
        rows = db.read(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at")
    else:
        rows = db.read(f"SELECT {_COLUMNS} FROM api_keys WHERE user = ? ORDER BY created_at", (user,))
    return [_key(r) for r in rows]


def revoke_key(db: AccessDB, key_id: str) -> ApiKey:
    get_key(db, key_id)
    with db.write() as tx:
        tx.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
    return get_key(db, key_id)


def verify(db: AccessDB, presented: str) -> ApiKey | None:
    """The key `presented` is, if it is a usable one (known, secret right, not revoked, not expired)."""
    match = KEY.fullmatch(presented.strip())
    if match is None:
        return None
    key_id, secret = match.groups()
    rows = db.read(f"SELECT {_COLUMNS}, hash FROM api_keys WHERE id = ?", (key_id,))
    # An unknown id is compared against a hash all the same, so that it takes as long as a wrong secret.
    stored = rows[0][-1] if rows else _hash("")
    if not hmac.compare_digest(_hash(secret), stored) or not rows:
        return None
    key = _key(rows[0][:-1])
    now = time.time()
    if not key.usable(now):
        return None
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION_S:
        with db.write() as tx:
            tx.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))
        key.last_used_at = now
    return key


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m', '3600s' or a number of seconds, as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return float(match[1]) * unit
