"""The collection registry: which embedding identity and which physical index serve each collection.

Stored as one JSON document in the data dir, replaced atomically on every change. Only the process that
owns the data dir reads and writes it.
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

    def key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:10]


class CollectionRecord(BaseModel):
    name: str
    embedding: EmbeddingIdentity
    live_index: str
    building_index: str | None = None
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

    def get(self, name: str) -> CollectionRecord:
        record = self._records.get(name)
        if record is None:
            raise CollectionNotFound(name)
        return record

    def list(self) -> list[CollectionRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    def ensure(
        self, name: str, identity: EmbeddingIdentity, docs_base_url: str | None = None
    ) -> tuple[CollectionRecord, bool]:
        """The collection's record, created for `identity` when missing. True when it was created."""
        validate_name(name)
        with self._lock:
            record = self._records.get(name)
            if record is not None:
                if record.embedding != identity:
                    raise EmbeddingMismatch(
                        f"collection {name!r} is indexed with {record.embedding.model} "
                        f"({record.embedding.dimensions}-d, chunking {record.embedding.chunking}), "
                        f"not {identity.model} ({identity.dimensions}-d, chunking {identity.chunking})"
                    )
                return record, False
            record = CollectionRecord(
                name=name,
                embedding=identity,
                live_index=index_name(name, identity),
                docs_base_url=docs_base_url,
            )
            self._records[name] = record
            self._save()
            return record, True

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
