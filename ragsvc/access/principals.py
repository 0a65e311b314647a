"""Users, the groups they belong to, and the rights granted to a user or a group on a collection or on all.

Rights: read (search, ask, /v1 chat, MCP), write (upload, delete documents, ingest) and admin (create,
delete, reindex, change rights); each includes the ones before it. '*' grants on every collection.
"""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel

from indexes.errors import InvalidRequest, RagsvcError
from ragsvc.access.db import AccessDB
from ragsvc.service.access import AccessDenied

Level = Literal["read", "write", "admin"]
LEVELS: tuple[Level, ...] = ("read", "write", "admin")
ALL_COLLECTIONS = "*"
# Names users and groups can have; an e-mail address (Open WebUI's users) is one.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")


class UserNotFound(RagsvcError):
    code = "user_not_found"


class GroupNotFound(RagsvcError):
    code = "group_not_found"


class NameTaken(RagsvcError):
    code = "name_taken"


class DeletingSelf(RagsvcError):
    """An admin asked to delete their own user: refused, so that the last admin cannot lock everyone out."""

    code = "deleting_self"


class AdminOnly(AccessDenied):
    """An admin operation asked for by a caller who is not an admin (403 forbidden)."""


class User(BaseModel):
    name: str
    admin: bool = False
    groups: list[str] = []
    created_at: float


class Grant(BaseModel):
    subject_kind: Literal["user", "group"]
    subject: str
    collection: str
    level: Level


def check_name(kind: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid {kind} name {name!r}: use 1-128 letters, digits, '_', '.', '@', '+', '-'"
        )
    return name


def create_user(db: AccessDB, name: str, *, admin: bool = False, groups: list[str] = ()) -> User:
    check_name("user", name)
    with db.write() as tx:
        if tx.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
            raise NameTaken(f"user {name!r} exists")
        for group in groups:
            if not tx.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone():
                raise GroupNotFound(f"group {group!r} does not exist")
        tx.execute("INSERT INTO users (name, created_at, admin) VALUES (?, ?, ?)", (name, time.time(), admin))
        tx.executemany("INSERT INTO members (user, grp) VALUES (?, ?)", [(name, g) for g in groups])
    return get_user(db, name)


def get_user(db: AccessDB, name: str) -> User:
    rows = db.read("SELECT name, admin, created_at FROM users WHERE name = ?", (name,))
    if not rows:
        raise UserNotFound(f"user {name!r} does not exist")
    groups = [g for (g,) in db.read("SELECT grp FROM members WHERE user = ? ORDER BY grp", (name,))]
    return User(name=rows[0][0], admin=bool(rows[0][1]), created_at=rows[0][2], groups=groups)


def find_user(db: AccessDB, name: str) -> User | None:
    try:
        return get_user(db, name)
    except UserNotFound:
        return None


def list_users(db: AccessDB) -> list[User]:
    return [get_user(db, name) for (name,) in db.read("SELECT name FROM users ORDER BY name")]


def delete_user(db: AccessDB, name: str) -> None:
    """The user, their keys, memberships, grants, usage rows and counters; nothing of them stays readable in
    the database's files (secure_delete, and the WAL emptied)."""
    get_user(db, name)
    with db.write() as tx:
        tx.execute("DELETE FROM grants WHERE subject_kind = 'user' AND subject = ?", (name,))
        tx.execute("DELETE FROM usage WHERE user = ?", (name,))
        tx.execute("DELETE FROM counters WHERE bucket LIKE ? ESCAPE '\\'", (f"%|user={_like(name)}|%",))
        keys = [k for (k,) in tx.execute("SELECT id FROM api_keys WHERE user = ?", (name,)).fetchall()]
        for key in keys:
            tx.execute("DELETE FROM limits WHERE scope_kind = 'key' AND scope = ?", (key,))
            tx.execute("DELETE FROM counters WHERE bucket LIKE ? ESCAPE '\\'", (f"%|key={_like(key)}|%",))
        tx.execute("DELETE FROM users WHERE name = ?", (name,))  # keys and memberships cascade
    db.wipe_deleted()


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def create_group(db: AccessDB, name: str) -> None:
    check_name("group", name)
    with db.write() as tx:
        if tx.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone():
            raise NameTaken(f"group {name!r} exists")
        tx.execute("INSERT INTO groups (name, created_at) VALUES (?, ?)", (name, time.time()))


def list_groups(db: AccessDB) -> list[dict]:
    groups = []
    for (name,) in db.read("SELECT name FROM groups ORDER BY name"):
        members = [u for (u,) in db.read("SELECT user FROM members WHERE grp = ? ORDER BY user", (name,))]
        groups.append({"name": name, "members": members})
    return groups


def delete_group(db: AccessDB, name: str) -> None:
    _existing_group(db, name)
    with db.write() as tx:
        tx.execute("DELETE FROM grants WHERE subject_kind = 'group' AND subject = ?", (name,))
        tx.execute("DELETE FROM limits WHERE scope_kind = 'group' AND scope = ?", (name,))
        tx.execute("DELETE FROM groups WHERE name = ?", (name,))


def _existing_group(db: AccessDB, name: str) -> None:
    if not db.read("SELECT 1 FROM groups WHERE name = ?", (name,)):
        raise GroupNotFound(f"group {name!r} does not exist")


def add_member(db: AccessDB, group: str, user: str) -> None:
    get_user(db, user)
    _existing_group(db, group)
    with db.write() as tx:
        tx.execute("INSERT OR IGNORE INTO members (user, grp) VALUES (?, ?)", (user, group))


def remove_member(db: AccessDB, group: str, user: str) -> None:
    with db.write() as tx:
        tx.execute("DELETE FROM members WHERE user = ? AND grp = ?", (user, group))


def grant(
    db: AccessDB, subject_kind: Literal["user", "group"], subject: str, collection: str, level: Level
) -> None:
    """Give `subject` `level` on `collection` ('*': all), replacing what it had there."""
    if level not in LEVELS:
        raise InvalidRequest(f"unknown right {level!r}: use read, write or admin")
    if subject_kind == "user":
        get_user(db, subject)
    else:
        _existing_group(db, subject)
    with db.write() as tx:
        tx.execute(
            "INSERT OR REPLACE INTO grants (subject_kind, subject, collection, level) VALUES (?, ?, ?, ?)",
            (subject_kind, subject, collection, level),
        )


def revoke(db: AccessDB, subject_kind: Literal["user", "group"], subject: str, collection: str) -> None:
    with db.write() as tx:
        tx.execute(
            "DELETE FROM grants WHERE subject_kind = ? AND subject = ? AND collection = ?",
            (subject_kind, subject, collection),
        )


def list_grants(db: AccessDB) -> list[Grant]:
    rows = db.read("SELECT subject_kind, subject, collection, level FROM grants ORDER BY 1, 2, 3")
    return [Grant(subject_kind=k, subject=s, collection=c, level=lv) for k, s, c, lv in rows]


def grants_of(db: AccessDB, user: User) -> dict[str, Level]:
    """The highest right `user` holds on each collection (or '*'), from their own grants and their groups'.
    An admin user holds admin on every collection."""
    if user.admin:
        return {ALL_COLLECTIONS: "admin"}
    subjects = [("user", user.name)] + [("group", g) for g in user.groups]
    held: dict[str, Level] = {}
    for kind, subject in subjects:
        for collection, level in db.read(
            "SELECT collection, level FROM grants WHERE subject_kind = ? AND subject = ?", (kind, subject)
        ):
            if LEVELS.index(level) > LEVELS.index(held.get(collection, "read")) or collection not in held:
                held[collection] = level
    return held
