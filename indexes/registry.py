"""The collection registry: which embedding identity and which physical index serve each collection.

Stored as one JSON document in the data dir, replaced atomically on every change. Only the process that
owns the data dir reads and writes it. Records are replaced, never edited, on a model switch, so a reader
holding one always sees a model and the index built with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from indexes.errors import CollectionNotFound, EmbeddingMismatch, InvalidCollectionName

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
    # Where an OpenAI-compatible provider answers. Not part of the identity: the same model moved to another
    # host makes the same vectors.
    embedding_url: str | None = None
    docs_base_url: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def index_name(collection: str, identity: EmbeddingIdentity) -> str:
    model_slug = re.sub(r"[^a-z0-9]+", "-", identity.model.rsplit("/", 1)[-1].lower()).strip("-")[:40]
    return f"{collection}--{model_slug}-{identity.dimensions}-{identity.key()}"


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, CollectionRecord] = {}
        if path.exists():
            raw = json.loads(path.read_text())
            self._records = {n: CollectionRecord.model_validate(r) for n, r in raw["collections"].items()}

    def _save(self) -> None:
        body = {"collections": {n: r.model_dump(mode="json") for n, r in sorted(self._records.items())}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _replace(self, record: CollectionRecord) -> CollectionRecord:
        """Store a new version of a record; the caller holds the lock. On a failed write nothing changes."""
        previous = self._records.get(record.name)
        self._records[record.name] = record
        try:
            self._save()
        except BaseException:
            if previous is None:
                del self._records[record.name]
            else:
                self._records[record.name] = previous
            raise
        return record

    def get(self, name: str) -> CollectionRecord:
        record = self._records.get(name)
        if record is None:
            raise CollectionNotFound(name)
        return record

    def find(self, name: str) -> CollectionRecord | None:
        return self._records.get(name)

    def list(self) -> list[CollectionRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

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
        with self._lock:
            record = self._records.get(name)
            if record is not None:
                if record.embedding != identity:
                    raise EmbeddingMismatch(
                        f"collection {name!r} is indexed with {record.embedding.describe()}, "
                        f"not {identity.describe()}"
                    )
                return record, False
            record = CollectionRecord(
                name=name,
                embedding=identity,
                live_index=index_name(name, identity),
                embedding_url=embedding_url,
                docs_base_url=docs_base_url,
            )
            return self._replace(record), True

    def start_build(self, name: str, index: str) -> CollectionRecord:
        """Record the index being built for the collection, so that a crash leaves a trace to clean."""
        with self._lock:
            record = self.get(name)
            return self._replace(record.model_copy(update={"building_index": index}))

    def abandon_build(self, name: str) -> CollectionRecord | None:
        with self._lock:
            record = self._records.get(name)
            if record is None or record.building_index is None:
                return record
            return self._replace(record.model_copy(update={"building_index": None}))

    def switch(
        self,
        name: str,
        identity: EmbeddingIdentity,
        index: str,
        *,
        embedding_url: str | None,
        keep_old: bool,
    ) -> tuple[CollectionRecord, str]:
        """Make `index`, built with `identity`, the live one in one atomic write; returns the old live index."""
        with self._lock:
            record = self.get(name)
            old = record.live_index
            retired = [i for i in record.retired_indexes if i != index]
            if keep_old and old not in retired:
                retired.append(old)
            updated = record.model_copy(
                update={
                    "embedding": identity,
                    "live_index": index,
                    "building_index": None,
                    "retired_indexes": retired,
                    "embedding_url": embedding_url,
                    "updated_at": datetime.now(UTC),
                }
            )
            return self._replace(updated), old

    def touch(self, name: str) -> None:
        with self._lock:
            self.get(name).updated_at = datetime.now(UTC)
            self._save()

    def remove(self, name: str) -> CollectionRecord:
        with self._lock:
            record = self.get(name)
            del self._records[name]
            self._save()
            return record
