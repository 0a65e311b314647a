"""Who is asking, and the one check every service function makes before it touches a collection's data.

A `Principal` is the caller's scope: a user, their groups and the rights granted to them, resolved from the
credential by the front end (never from the request body). `require` is the only place that decides; a
collection the caller may not read is reported exactly as a missing one.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from pydantic import BaseModel

from indexes.errors import CollectionNotFound, RagsvcError

ALL_COLLECTIONS = "*"


class Right(IntEnum):
    """Rights on a collection; each one includes the ones below it."""

    read = 1  # search, ask, list its documents and jobs
    write = 2  # ingest, upload and delete documents
    admin = 3  # create, delete, reindex, build, change rights


class AccessDenied(RagsvcError):
    """The caller may read the collection but lacks the right the operation needs."""

    code = "forbidden"


class Grant(BaseModel, frozen=True):
    collection: str = ALL_COLLECTIONS  # a collection's name, or '*' for every collection
    right: Right


class Principal(BaseModel, frozen=True):
    """The caller's scope. A job keeps the principal that submitted it and runs with its rights."""

    user: str
    groups: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    key_id: str | None = None  # the key it came with: usage and per-key limits are counted on it

    def holds(self, collection: str, right: Right) -> bool:
        return any(g.right >= right and g.collection in (collection, ALL_COLLECTIONS) for g in self.grants)


# The single user of a machine-local setup (the CLI, and the server while access control is off).
LOCAL = Principal(user="local", grants=(Grant(right=Right.admin),))


def require(caller: Principal, collection: str, right: Right) -> None:
    """Raise unless `caller` holds `right` on `collection`: CollectionNotFound when they may not even read it
    (so that they cannot learn it exists), AccessDenied when they may read it but not do this."""
    if not caller.holds(collection, Right.read):
        raise CollectionNotFound(collection)
    if not caller.holds(collection, right):
        raise AccessDenied(f"no {right.name} right on collection {collection!r}")


def readable(caller: Principal, collections: Iterable[str]) -> list[str]:
    """The names among `collections` that `caller` may read, in their order."""
    return [name for name in collections if caller.holds(name, Right.read)]
