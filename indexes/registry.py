"""The collection registry: which embedding identity and which physical index serve each collection.

`Registry` holds the rules (create, start a build, switch, remove), written once; where the records live is a
`RegistryStore`: one JSON file in the data dir for the embedded default (one process owns it), or a Redis hash
shared by every API replica and worker of a server deployment. Records are replaced, never edited, and every
change is one atomic step of the store, so a reader holding a record always sees a model and the index
built with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

from indexes.errors import CollectionNotFound, EmbeddingMismatch, InvalidCollectionName

if TYPE_CHECKING:
    import redis

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class EmbeddingIdentity(BaseModel, frozen=True):
    """Everything that decides which vector space a chunk lands in; two identities never share an index."""

    provider: str
    model: str
    dimensions: int
    distance: str = "cosine"
    chunking: str
    # What an endpoint is told besides the text; each changes the vectors. None for local models.
    query_prefix: str | None = None
    document_prefix: str | None = None
    input_type: bool | None = None

    def key(self) -> str:
        # Unset fields are left out, so identities recorded before they existed keep their key.
        return hashlib.sha256(self.model_dump_json(exclude_none=True).encode()).hexdigest()[:10]

    def describe(self) -> str:
        return f"{self.provider}:{self.model} ({self.dimensions}-d, chunking {self.chunking})"


class CollectionRecord(BaseModel):
    name: str
    embedding: EmbeddingIdentity
    live_index: str
    building_index: str | None = None
    # Old indexes kept by `reindex --keep-old`; deleting the collection drops them too.
    retired_indexes: list[str] = Field(default_factory=list)
    # Old indexes a switch replaced, dropped once no search reads them; a crash before the drop leaves them
    # here, and the collection's next write (or a start-up) drops them.
    dropping_indexes: list[str] = Field(default_factory=list)
    # Where an OpenAI-compatible provider answers. Not part of the identity: the same model moved to another
    # host makes the same vectors.
    embedding_url: str | None = None
    docs_base_url: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def every_index(self) -> set[str]:
        """Every physical index that holds this collection's chunks: live, building, kept and dropping."""
        return {self.live_index, *self.retired_indexes, *self.dropping_indexes} | (
            {self.building_index} if self.building_index else set()
        )


def validate_name(name: str) -> str:
    # fullmatch: with match, '$' would also accept a name that ends in a newline.
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def index_name(collection: str, identity: EmbeddingIdentity) -> str:
    model_slug = re.sub(r"[^a-z0-9]+", "-", identity.model.rsplit("/", 1)[-1].lower()).strip("-")[:40]
    return f"{collection}--{model_slug}-{identity.dimensions}-{identity.key()}"


# A change to one collection's record: the current record (None: no such collection) in, the record to store
# out; None removes it, the very record passed in stores nothing. It may raise, and then nothing changes. A
# store may run it more than once (after another process's write), so it only computes.
Change = Callable[[CollectionRecord | None], CollectionRecord | None]


class RegistryStore(Protocol):
    def read(self, name: str) -> CollectionRecord | None: ...

    def read_all(self) -> list[CollectionRecord]: ...

    def change(self, name: str, step: Change) -> None:
        """Apply `step` to the current record as one atomic step."""
        ...

    def close(self) -> None: ...


class JsonFileStore:
    """Every record in one JSON document in the data dir, replaced atomically on every change. Only the
    process that owns the data dir reads and writes it, so its memory is the current state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, CollectionRecord] = {}
        if path.exists():
            raw = json.loads(path.read_text())
            self._records = {n: CollectionRecord.model_validate(r) for n, r in raw["collections"].items()}

    def _save(self, records: dict[str, CollectionRecord]) -> None:
        body = {"collections": {n: r.model_dump(mode="json") for n, r in sorted(records.items())}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def read(self, name: str) -> CollectionRecord | None:
        return self._records.get(name)

    def read_all(self) -> list[CollectionRecord]:
        return list(self._records.values())

    def change(self, name: str, step: Change) -> None:
        with self._lock:
            current = self._records.get(name)
            new = step(current)
            if new is current:
                return
            records = {n: r for n, r in self._records.items() if n != name}
            if new is not None:
                records[name] = new
            self._save(records)  # on a failed write nothing changes
            self._records = records

    def close(self) -> None:
        pass


class RedisStore:
    """Every record as one JSON value in a Redis hash (`ragsvc:<namespace>:registry`), shared by every
    process of a server deployment. Each read asks Redis, so a switch made by any process is seen by the
    next request of every other; a change is one WATCH/MULTI transaction on the hash, retried when another
    process wrote in between. A record read twice unchanged is the same object (the cache is keyed by the
    stored JSON), as with the file store."""

    def __init__(self, client: redis.Redis, namespace: str = "ragsvc") -> None:
        import redis

        self._redis = client
        self._watch_error = redis.WatchError
        self.key = f"ragsvc:{namespace}:registry"
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[bytes, CollectionRecord]] = {}

    def _parse(self, name: str, raw: bytes | None) -> CollectionRecord | None:
        if raw is None:
            with self._lock:
                self._parsed.pop(name, None)
            return None
        with self._lock:
            cached = self._parsed.get(name)
            if cached is not None and cached[0] == raw:
                return cached[1]
        record = CollectionRecord.model_validate_json(raw)
        with self._lock:
            self._parsed[name] = (raw, record)
        return record

    def read(self, name: str) -> CollectionRecord | None:
        return self._parse(name, self._redis.hget(self.key, name))

    def read_all(self) -> list[CollectionRecord]:
        stored = self._redis.hgetall(self.key)
        records = [self._parse(name.decode(), raw) for name, raw in stored.items()]
        return [r for r in records if r is not None]

    def change(self, name: str, step: Change) -> None:
        while True:
            with self._redis.pipeline() as tx:
                try:
                    tx.watch(self.key)
                    current = self._parse(name, tx.hget(self.key, name))
                    new = step(current)
                    if new is current:
                        return
                    tx.multi()
                    if new is None:
                        tx.hdel(self.key, name)
                    else:
                        tx.hset(self.key, name, new.model_dump_json())
                    tx.execute()
                    return
                except self._watch_error:
                    continue

    def close(self) -> None:
        pass  # the client is shared; its owner closes it


def _existing(name: str, record: CollectionRecord | None) -> CollectionRecord:
    if record is None:
        raise CollectionNotFound(name)
    return record


class Registry:
    """The collections' records and the rules for changing them, on a file or a Redis store."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def get(self, name: str) -> CollectionRecord:
        return _existing(name, self.store.read(name))

    def find(self, name: str) -> CollectionRecord | None:
        return self.store.read(name)

    def list(self) -> list[CollectionRecord]:
        return sorted(self.store.read_all(), key=lambda r: r.name)

    def _change(self, name: str, step: Change) -> CollectionRecord | None:
        """Apply `step` atomically; returns the record it stored or kept (None when it removed it)."""
        result: list[CollectionRecord | None] = [None]

        def recorded(current: CollectionRecord | None) -> CollectionRecord | None:
            result[0] = step(current)
            return result[0]

        self.store.change(name, recorded)
        return result[0]

    def ensure(
        self,
        name: str,
        identity: EmbeddingIdentity,
        docs_base_url: str | None = None,
        *,
        embedding_url: str | None = None,
    ) -> tuple[CollectionRecord, bool]:
        """The collection's record, created for `identity` when missing. True when it was created."""
        validate_name(name)
        found: list[CollectionRecord | None] = [None]

        def step(current: CollectionRecord | None) -> CollectionRecord:
            found[0] = current
            if current is not None:
                if current.embedding != identity:
                    raise EmbeddingMismatch(
                        f"collection {name!r} is indexed with {current.embedding.describe()}, "
                        f"not {identity.describe()}"
                    )
                return current
            return CollectionRecord(
                name=name,
                embedding=identity,
                live_index=index_name(name, identity),
                embedding_url=embedding_url,
                docs_base_url=docs_base_url,
            )

        record = self._change(name, step)
        assert record is not None
        return record, found[0] is None

    def start_build(self, name: str, index: str) -> CollectionRecord:
        """Record the index being built for the collection, so that a crash leaves a trace to clean."""

        def step(current: CollectionRecord | None) -> CollectionRecord:
            return _existing(name, current).model_copy(update={"building_index": index})

        record = self._change(name, step)
        assert record is not None
        return record

    def abandon_build(self, name: str) -> CollectionRecord | None:
        def step(current: CollectionRecord | None) -> CollectionRecord | None:
            if current is None or current.building_index is None:
                return current
            return current.model_copy(update={"building_index": None})

        return self._change(name, step)

    def switch(
        self,
        name: str,
        identity: EmbeddingIdentity,
        index: str,
        *,
        embedding_url: str | None,
        keep_old: bool,
    ) -> tuple[CollectionRecord, str]:
        """Make `index`, built with `identity`, the live one in one atomic write; returns the old live index,
        which joins the retired indexes (`keep_old`) or the ones to drop."""
        old: list[str] = []

        def step(current: CollectionRecord | None) -> CollectionRecord:
            record = _existing(name, current)
            old[:] = [record.live_index]
            retired = [i for i in record.retired_indexes if i != index]
            dropping = [i for i in record.dropping_indexes if i != index]
            kept = retired if keep_old else dropping
            if record.live_index not in kept:
                kept.append(record.live_index)
            return record.model_copy(
                update={
                    "embedding": identity,
                    "live_index": index,
                    "building_index": None,
                    "retired_indexes": retired,
                    "dropping_indexes": dropping,
                    "embedding_url": embedding_url,
                    "updated_at": datetime.now(UTC),
                }
            )

        record = self._change(name, step)
        assert record is not None
        return record, old[0]

    def forget_index(self, name: str, index: str) -> CollectionRecord | None:
        """Once an old index is dropped, take it off the record's lists."""

        def step(current: CollectionRecord | None) -> CollectionRecord | None:
            if current is None or index not in (*current.retired_indexes, *current.dropping_indexes):
                return current
            return current.model_copy(
                update={
                    "retired_indexes": [i for i in current.retired_indexes if i != index],
                    "dropping_indexes": [i for i in current.dropping_indexes if i != index],
                }
            )

        return self._change(name, step)

    def touch(self, name: str) -> None:
        def step(current: CollectionRecord | None) -> CollectionRecord:
            return _existing(name, current).model_copy(update={"updated_at": datetime.now(UTC)})

        self._change(name, step)

    def remove(self, name: str) -> CollectionRecord:
        removed: list[CollectionRecord] = []

        def step(current: CollectionRecord | None) -> None:
            removed[:] = [_existing(name, current)]
            return None

        self._change(name, step)
        return removed[0]

    def close(self) -> None:
        self.store.close()
