"""Ingest a doc folder into a collection: find files, parse, chunk, embed, write, and sync away what went.

Per file the new chunks are written before the old version's are dropped, so a failure at any step leaves
the previous version searchable; point ids are deterministic, so a rerun writes nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from indexes.engine import ChunkPoint, Filter, VectorEngine
from indexes.errors import InvalidRequest
from indexes.registry import CollectionRecord, Registry
from indexes.sparse import bm25_document
from ingest.chunk import Chunk, ChunkingParams, chunk_document
from ingest.embed import Embedder
from ingest.parse import DOC_SUFFIXES, ParsedDocument, parse_text

POINT_NAMESPACE = uuid.UUID("5b0f2a8e-52c4-4d43-9b7e-5f1d6f0c9a11")
SKIPPED_DIRS = {"_build", "node_modules", "__pycache__", "venv", ".venv", "site-packages"}
FILES_PER_BATCH = 32

Progress = Callable[[int, int], None]


class FileIssue(BaseModel):
    source: str
    reason: str


class IngestSummary(BaseModel):
    collection: str
    path: str
    files: int = 0
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    skipped: list[FileIssue] = Field(default_factory=list)
    failed: list[FileIssue] = Field(default_factory=list)
    chunks_written: int = 0
    chunks_total: int = 0
    seconds: float = 0.0


@dataclass
class _Prepared:
    source: str
    doc_hash: str
    document: ParsedDocument
    chunks: list[Chunk]


def find_doc_files(root: Path, summary: IngestSummary) -> Iterator[tuple[str, Path]]:
    """Doc files under root, never following links out of it; what is passed over is reported."""
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_DIRS)
        for filename in sorted(filenames):
            path = Path(directory) / filename
            source = path.relative_to(root).as_posix()
            if filename.startswith("."):
                continue
            if PurePosixPath(filename).suffix.lower() not in DOC_SUFFIXES:
                continue
            if path.is_symlink():
                summary.skipped.append(FileIssue(source=source, reason="symbolic link: not followed"))
                continue
            yield source, path


def page_link(base_url: str | None, chunk: Chunk, file_type: str) -> str | None:
    if not base_url:
        return None
    page = PurePosixPath(chunk.source)
    if file_type == "markdown":
        stem = page.with_suffix("")
        path = f"{stem.parent.as_posix()}/" if stem.name in ("index", "_index", "README") else f"{stem}/"
        path = "" if path == "./" else path
    else:
        path = page.with_suffix(".html").as_posix()
    anchor = f"#{chunk.anchor}" if chunk.anchor else ""
    return f"{base_url.rstrip('/')}/{path}{anchor}"


def point_id(origin: str, source: str, doc_hash: str, position: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{origin}\n{source}\n{doc_hash}\n{position}"))


def _existing_versions(engine: VectorEngine, index: str, origin: str) -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for hit in engine.scroll(index, Filter(must={"origin": origin}), batch=1024):
        versions.setdefault(hit.payload["source"], set()).add(hit.payload["doc_hash"])
    return versions


def ingest_folder(
    root: Path,
    collection: str,
    *,
    engine: VectorEngine,
    registry: Registry,
    embedder: Embedder,
    params: ChunkingParams,
    docs_base_url: str | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    started = time.perf_counter()
    root = root.expanduser().resolve()
    if not root.is_dir():
        raise InvalidRequest(f"{root} is not a folder")
    record, _ = registry.ensure(collection, embedder.identity(params.label()), docs_base_url)
    index = record.live_index
    if not engine.has_index(index):
        engine.create_index(index, embedder.dimensions)
    origin = str(root)
    summary = IngestSummary(collection=collection, path=origin)
    files = list(find_doc_files(root, summary))
    summary.files = len(files)
    existing = _existing_versions(engine, index, origin)

    done = 0
    for start in range(0, len(files), FILES_PER_BATCH):
        batch: list[_Prepared] = []
        for source, path in files[start : start + FILES_PER_BATCH]:
            prepared = _prepare(source, path, existing, embedder, params, summary)
            if prepared is not None:
                batch.append(prepared)
        _write(batch, record, engine, embedder, origin, existing, summary)
        done += len(files[start : start + FILES_PER_BATCH])
        if progress:
            progress(done, len(files))

    present = {source for source, _ in files}
    gone = sorted(set(existing) - present)
    if gone:
        engine.delete(index, Filter(must={"origin": origin, "source": gone}))
        summary.removed = gone
    summary.chunks_total = engine.count(index)
    registry.touch(collection)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _prepare(
    source: str,
    path: Path,
    existing: dict[str, set[str]],
    embedder: Embedder,
    params: ChunkingParams,
    summary: IngestSummary,
) -> _Prepared | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        summary.failed.append(FileIssue(source=source, reason=f"unreadable: {exc.strerror or exc}"))
        return None
    doc_hash = hashlib.sha256(raw).hexdigest()[:16]
    if existing.get(source) == {doc_hash}:
        summary.unchanged.append(source)
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if "\x00" in text:
        summary.failed.append(FileIssue(source=source, reason="binary content in a text document"))
        return None
    try:
        document = parse_text(source, text)
        chunks = chunk_document(document, params, embedder.count_tokens)
    except Exception as exc:  # one bad file must not stop the folder; its reason is reported
        summary.failed.append(FileIssue(source=source, reason=f"could not parse: {exc}"))
        return None
    return _Prepared(source, doc_hash, document, chunks)


def _write(
    batch: list[_Prepared],
    record: CollectionRecord,
    engine: VectorEngine,
    embedder: Embedder,
    origin: str,
    existing: dict[str, set[str]],
    summary: IngestSummary,
) -> None:
    texts = [chunk.embed_text for item in batch for chunk in item.chunks]
    vectors = iter(embedder.embed_documents(texts) if texts else [])
    for item in batch:
        points = []
        for chunk in item.chunks:
            points.append(
                ChunkPoint(
                    id=point_id(origin, item.source, item.doc_hash, chunk.position),
                    dense=next(vectors),
                    sparse=bm25_document(chunk.embed_text),
                    payload={
                        "source": item.source,
                        "origin": origin,
                        "title": item.document.title,
                        "section": chunk.heading,
                        "section_trail": chunk.section_trail,
                        "anchor": chunk.anchor,
                        "link": page_link(record.docs_base_url, chunk, item.document.file_type),
                        "position": chunk.position,
                        "text": chunk.text,
                        "tokens": chunk.tokens,
                        "doc_hash": item.doc_hash,
                        "chunk_hash": chunk.content_hash,
                        "file_type": item.document.file_type,
                    },
                )
            )
        engine.upsert(record.live_index, points)
        previous = existing.get(item.source)
        if previous:
            engine.delete(
                record.live_index,
                Filter(must={"origin": origin, "source": item.source}, must_not={"doc_hash": item.doc_hash}),
            )
        if not item.chunks:
            summary.skipped.append(FileIssue(source=item.source, reason="no text to index"))
        elif previous:
            summary.updated.append(item.source)
        else:
            summary.added.append(item.source)
        summary.chunks_written += len(points)
