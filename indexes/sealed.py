"""An engine that stores each chunk's text encrypted with its document's own key, and destroys the key when
the document's last chunk is deleted, so that copies the engine keeps (WAL, old segments) can never be read.

Only the fields filters and bookkeeping need stay in the clear (CLEAR_FIELDS: names, hashes, counts); every
other payload field is sealed with AES-256-GCM. Vectors stay as they are: search needs them (see
docs/guides/access.md for what that leaves until a compaction). A hit whose key is gone is a deleted
document and is never returned.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from indexes.engine import (
    BuildReport,
    ChunkPoint,
    Filter,
    Hit,
    SearchMode,
    SparseVector,
    VectorEngine,
    check_points,
)
from indexes.keys import DocumentKeys

# What filters, deletions and version checks read; everything else in a payload is sealed.
CLEAR_FIELDS = frozenset({"source", "origin", "doc_hash", "file_type", "position", "tokens", "written_at"})
# The fields that name one version of one document: its key's identity.
DOCUMENT_FIELDS = ("origin", "source", "doc_hash")
SEALED = "sealed"
NONCE_BYTES = 12


def key_id(payload: dict[str, Any]) -> str:
    """The key of the document version a payload belongs to."""
    named = "\0".join(str(payload.get(field, "")) for field in DOCUMENT_FIELDS)
    return hashlib.sha256(named.encode()).hexdigest()


def seal(point_id: str, payload: dict[str, Any], key: bytes) -> dict[str, Any]:
    clear = {k: v for k, v in payload.items() if k in CLEAR_FIELDS}
    secret = {k: v for k, v in payload.items() if k not in CLEAR_FIELDS}
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(secret).encode(), point_id.encode())
    return clear | {SEALED: base64.b64encode(nonce + sealed).decode("ascii")}


def unseal(point_id: str, payload: dict[str, Any], key: bytes) -> dict[str, Any]:
    raw = base64.b64decode(payload[SEALED])
    secret = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], point_id.encode())
    clear = {k: v for k, v in payload.items() if k != SEALED}
    return clear | json.loads(secret)


class SealedEngine:
    """Wraps any VectorEngine; keys live per physical index in `keys`. Capabilities of the wrapped engine
    (builds, aliases, flush) pass through unchanged."""

    def __init__(self, inner: VectorEngine, keys: DocumentKeys) -> None:
        self.inner = inner
        self.keys = keys

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class lacks: the wrapped engine's optional capabilities.
        return getattr(self.inner, name)

    def create_index(self, name: str, dense_size: int) -> None:
        self.inner.create_index(name, dense_size)

    def drop_index(self, name: str) -> None:
        self.inner.drop_index(name)
        self.keys.destroy_index(name)

    def has_index(self, name: str) -> bool:
        return self.inner.has_index(name)

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        check_points(name, None, points)  # bad input makes no keys
        ids = [key_id(p.payload) for p in points]
        keys = self.keys.ensure(name, ids) if points else {}
        sealed = [
            ChunkPoint(p.id, p.dense, p.sparse, seal(p.id, p.payload, keys[k]))
            for p, k in zip(points, ids, strict=True)
        ]
        self.inner.upsert(name, sealed)

    def delete(self, name: str, where: Filter) -> None:
        """Delete the points, then destroy the key of every document version that has no point left."""
        touched = {key_id(hit.payload): hit.payload for hit in self.inner.scroll(name, where, batch=1024)}
        self.inner.delete(name, where)
        gone = [
            k
            for k, payload in touched.items()
            if not self.inner.count(
                name, Filter(must={f: payload[f] for f in DOCUMENT_FIELDS if f in payload})
            )
        ]
        self.keys.destroy(name, gone)

    def query(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: SparseVector | None,
        mode: SearchMode,
        limit: int,
        where: Filter | None = None,
    ) -> list[Hit]:
        hits = self.inner.query(name, dense=dense, sparse=sparse, mode=mode, limit=limit, where=where)
        return list(self._open(name, hits))

    def count(self, name: str, where: Filter | None = None) -> int:
        return self.inner.count(name, where)

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]:
        pages = self.inner.scroll(name, where, batch)
        return self._open_pages(name, pages, batch)

    def _open_pages(self, name: str, hits: Iterator[Hit], batch: int) -> Iterator[Hit]:
        page: list[Hit] = []
        for hit in hits:
            page.append(hit)
            if len(page) == batch:
                yield from self._open(name, page)
                page = []
        yield from self._open(name, page)

    def _open(self, name: str, hits: Iterable[Hit]) -> Iterator[Hit]:
        hits = list(hits)
        wanted = {key_id(h.payload) for h in hits if SEALED in h.payload}
        keys = self.keys.get(name, wanted) if wanted else {}
        for hit in hits:
            if SEALED not in hit.payload:
                yield hit  # written before ragsvc sealed payloads; a re-ingest or reindex seals it
                continue
            key = keys.get(key_id(hit.payload))
            if key is None:
                continue  # its document was deleted: the ciphertext left in the engine's files is noise
            try:
                yield Hit(hit.id, hit.score, unseal(hit.id, hit.payload, key))
            except InvalidTag:
                continue  # a key of a later version of the same name cannot open it: not this document

    def build(self, name: str) -> BuildReport:
        return self.inner.build(name)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.keys.close()
