"""Keeping the engine in line with the registry: a collection's alias, dropping the indexes a switch
replaced once nobody reads them, and repairing what a crash between those steps left."""

from __future__ import annotations

import logging

from indexes.engine import LiveAliases
from indexes.errors import IndexExists
from indexes.registry import CollectionRecord
from ragsvc.service.runtime import Runtime

log = logging.getLogger("ragsvc.repair")


def point_live_alias(runtime: Runtime, record: CollectionRecord, *, new: bool = False) -> None:
    """On an engine with aliases, reach the collection's live index by the collection's name. A name that
    another program's Qdrant collection holds is refused for a `new` collection (IndexExists); an older
    collection (made before ragsvc kept aliases) serves on without its alias, and a warning says so."""
    if not isinstance(runtime.engine, LiveAliases):
        return
    try:
        runtime.engine.point_alias(record.name, record.live_index)
    except IndexExists:
        if new:
            raise
        log.warning("collection %r has no alias: a Qdrant collection of that name exists", record.name)


def drop_replaced(runtime: Runtime, name: str, index: str, timeout: float = 60.0) -> bool:
    """Drop an index a switch replaced once no search reads it (in any process that shares the reader
    counts) and take it off the record; False, and nothing dropped, if it was still read after `timeout`
    seconds (a later repair drops it)."""
    if not runtime.readers.wait_until_unread(index, timeout):
        log.warning("index %s of collection %r is still read; it is dropped later", index, name)
        return False
    runtime.engine.drop_index(index)
    runtime.registry.forget_index(name, index)
    return True


def repair(runtime: Runtime, name: str) -> None:
    """Bring the engine in line with the registry after a crash between a switch and its follow-ups: the
    alias points at the live index again, and replaced indexes that nobody reads are dropped. The caller
    holds the collection's write lock."""
    record = runtime.registry.find(name)
    if record is None:
        return
    engine = runtime.engine
    if isinstance(engine, LiveAliases) and engine.has_index(record.live_index):
        if engine.aliases().get(name) != record.live_index:
            log.warning(
                "alias %s did not point at the live index; pointing it at %s", name, record.live_index
            )
            point_live_alias(runtime, record)
    for index in record.dropping_indexes:
        if index != record.live_index:
            drop_replaced(runtime, name, index, timeout=0)


def repair_all(runtime: Runtime) -> None:
    """`repair` every collection whose writer is not at work right now (a writer repairs its own)."""
    for record in runtime.registry.list():
        with runtime.write_locks.hold(record.name, wait=False) as held:
            if held:
                repair(runtime, record.name)
