"""Ingest a doc folder into a collection: find files, parse, chunk, embed, write, and sync away what went.

Per file the new chunks are written before the old version's are dropped, so a failure at any step leaves
the previous version searchable; point ids are deterministic, so a rerun writes nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from indexes.engine import ChunkPoint, Filter, VectorEngine
from indexes.payload import ChunkPayload
from indexes.registry import CollectionRecord
from indexes.sparse import bm25_document
from ingest.chunk import Chunk, ChunkingParams, chunk_document
from ingest.document import INDEX_STEMS, ExtractionFailed, ParsedDocument, breadcrumb
from ingest.embed import Embedder
from ingest.faults import crash_point
from ingest.files import DEFAULT_MAX_FILE_BYTES, DocFile, FileIssue, FileRefused, read_doc_file, scan_folder
from ingest.progress import IngestProgress, Phase, Progress
from ingest.sandbox import Extractor

POINT_NAMESPACE = uuid.UUID("5b0f2a8e-52c4-4d43-9b7e-5f1d6f0c9a11")
# A document's lock, by its source: held while its chunks are written and its old version dropped.
DocumentLock = Callable[[str], AbstractContextManager[object]]

# At most this many files are embedded and written together, however few chunks they hold: progress moves.
FILES_PER_BATCH = 256

# How ragsvc reads a file into chunks (its parsers, the chunker, what is embedded), oldest first: a new label
# whenever a file's chunks would come out different, so that the next ingest reads again the files it read
# before. "" is every version before labels. tests/test_reading.py holds the chunks each label makes. (A
# change that stored chunks cannot live with, read again or not, is `ingest.chunk.CHUNKING_VERSION`'s: it
# asks for a new collection.)
READINGS = ("", "code-fenced")
READING = READINGS[-1]


def document_version(raw: bytes, reading: str | None = None) -> str:
    """A file's version as stored with its chunks (`doc_hash`): 16 hex of the SHA-256 of its bytes as a
    reading (this one unless named) reads them; a file is "unchanged" only when its bytes and reading are."""
    reading = READING if reading is None else reading
    return hashlib.sha256(f"{reading}\0".encode() + raw if reading else raw).hexdigest()[:16]


@dataclass(frozen=True)
class IngestLimits:
    """What one file may cost: its size, and the time and memory its parsing may take; and how many chunks
    are embedded and written together. Larger batches embed faster: more chunks of each token length to run
    together on ONNX Runtime (which never pads), less padding on torch (the Aalto docs in batches of 245
    chunks padded 9.5% more tokens than sorting all 2,694 at once, in batches of 1,024 2.7%)."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    parse_timeout: float = 120.0
    parse_memory_bytes: int = 2 << 30
    batch_chunks: int = 1024


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

    def progress(self, phase: Phase, files_done: int | None = None) -> IngestProgress:
        """These counts as a progress snapshot; every file is done unless `files_done` says otherwise."""
        return IngestProgress(
            phase=phase,
            files_done=self.files if files_done is None else files_done,
            files_total=self.files,
            chunks_written=self.chunks_written,
            added=len(self.added),
            updated=len(self.updated),
            unchanged=len(self.unchanged),
            removed=len(self.removed),
            skipped=len(self.skipped),
            failed=len(self.failed),
        )


@dataclass
class _Prepared:
    source: str
    doc_hash: str
    document: ParsedDocument
    chunks: list[Chunk]
    no_text_reason: str = "no text to index"


@dataclass(frozen=True)
class _Unchanged:
    source: str


_Outcome = _Prepared | _Unchanged | FileIssue  # of reading, parsing and chunking one file


def find_doc_files(
    root: Path, summary: IngestSummary, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> Iterator[tuple[str, Path]]:
    """Doc files under root, never following links out of it; what is passed over is reported."""
    files, issues = scan_folder(root, max_file_bytes)
    summary.skipped.extend(issues)
    for doc in files:
        yield doc.source, doc.path


def page_path(source: str, file_type: str) -> str:
    """Where a site generator puts a source file's page, relative to the site's root: MkDocs' folder URLs for
    Markdown, Sphinx's .html for reStructuredText and text, the file itself for the rest."""
    page = PurePosixPath(source)
    if file_type == "markdown":
        stem = page.with_suffix("")
        path = f"{stem.parent.as_posix()}/" if stem.name in ("index", "_index", "README") else f"{stem}/"
        return "" if path == "./" else path
    if file_type in ("rst", "text"):
        return page.with_suffix(".html").as_posix()
    return page.as_posix()


def page_link(base_url: str | None, chunk: Chunk, file_type: str) -> str | None:
    if not base_url:
        return None
    anchor = f"#{chunk.anchor}" if chunk.anchor else ""
    if file_type not in ("markdown", "rst", "text", "html", "pdf"):
        anchor = ""  # an HTML page's anchors and a PDF's page=N work in the file itself; others have none
    return f"{base_url.rstrip('/')}/{page_path(chunk.source, file_type)}{anchor}"


def point_id(origin: str, source: str, doc_hash: str, position: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{origin}\n{source}\n{doc_hash}\n{position}"))


def _existing_versions(engine: VectorEngine, index: str, origin: str) -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for hit in engine.scroll(index, Filter(must={"origin": origin}), batch=1024):
        payload = ChunkPayload.of(hit.payload)
        versions.setdefault(payload.source, set()).add(payload.doc_hash)
    return versions


def ingest_folder(
    root: Path,
    record: CollectionRecord,
    *,
    engine: VectorEngine,
    embedder: Embedder,
    params: ChunkingParams,
    progress: Progress | None = None,
    limits: IngestLimits | None = None,
    document_lock: DocumentLock | None = None,
) -> IngestSummary:
    """Ingest the folder `root` (resolved, and known to be a folder) into the collection's live index, which
    exists and holds vectors of `embedder`; the caller creates collections and records the change.

    Each document is written under its `document_lock`, and only when its file still holds what was read: a
    delete of it meanwhile (under the same lock) leaves it either fully written before the delete or not at
    all, and a version replaced meanwhile is left to the next run."""
    started = time.perf_counter()
    limits = limits or IngestLimits()
    index = record.live_index
    origin = str(root)
    summary = IngestSummary(collection=record.name, path=origin)
    files, passed_over = scan_folder(root, limits.max_file_bytes)
    summary.skipped.extend(passed_over)
    summary.files = len(files)
    existing = _existing_versions(engine, index, origin)

    done = 0

    def report(phase: Phase, files: int = 0) -> None:
        """A snapshot for each file dealt with and each change of phase; the caller throttles what it keeps."""
        nonlocal done
        done += files
        if progress:
            progress(summary.progress(phase, done))

    # The next batch is read, parsed and chunked on a thread while this one is embedded and written: the
    # parse worker and the chunker then use the cores that single-threaded steps (tokenising, pooling,
    # BM25, the store's writes) leave idle. Only this thread touches the summary, the progress and the
    # store. The executor is left (waiting for a parse in flight) before the extractor it uses is closed.
    with (
        Extractor(limits.parse_timeout, limits.parse_memory_bytes) as extractor,
        ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ragsvc-parse", initializer=_yield_to_embedding
        ) as parser,
    ):

        def prepare(start: int) -> tuple[list[_Outcome], int]:
            """The files from `start` on, until a batch's chunks or files are reached; and where it stopped."""
            outcomes: list[_Outcome] = []
            chunks, position = 0, start
            while position < len(files) and chunks < limits.batch_chunks and len(outcomes) < FILES_PER_BATCH:
                doc = files[position]
                crumbs = (
                    breadcrumb(doc.source, folder_titles) if names[PurePosixPath(doc.source).stem] > 1 else []
                )
                outcome = _prepare(root, doc, existing, embedder, params, extractor, limits, crumbs)
                outcomes.append(outcome)
                chunks += len(outcome.chunks) if isinstance(outcome, _Prepared) else 0
                position += 1
            return outcomes, position

        # A page whose name other folders' pages share (quickstart.md for each language, each folder's
        # _index.md) usually shares its title too: the folders' titles above it are what tell them apart. Given
        # to every page, they cost as much as they gained (tried on four sets: README, "Measured here").
        folder_titles = _folder_titles(root, files, extractor, limits)
        names = Counter(PurePosixPath(doc.source).stem for doc in files)
        pending = parser.submit(prepare, 0) if files else None
        while pending is not None:
            report("parsing")
            outcomes, position = pending.result()
            pending = parser.submit(prepare, position) if position < len(files) else None
            batch: list[_Prepared] = []
            for outcome in outcomes:
                if isinstance(outcome, _Prepared):
                    batch.append(outcome)
                    continue
                if isinstance(outcome, _Unchanged):
                    summary.unchanged.append(outcome.source)
                else:
                    summary.failed.append(outcome)
                report("parsing", files=1)
            if batch:
                report("embedding")
                _write(
                    batch,
                    record,
                    engine,
                    embedder,
                    root,
                    existing,
                    summary,
                    lambda: report("writing", 1),
                    document_lock or (lambda _source: nullcontext()),
                )

    # A file that is still there but could not be read this time keeps the version already stored.
    present = {doc.source for doc in files} | {issue.source for issue in passed_over}
    gone = sorted(set(existing) - present)
    if gone:
        report("removing")
        engine.delete(index, Filter(must={"origin": origin, "source": gone}))
        summary.removed = gone
    summary.chunks_total = engine.count(index)
    summary.seconds = round(time.perf_counter() - started, 3)
    report("done")
    return summary


def _yield_to_embedding() -> None:
    """Lower this thread's priority (and so that of the parse worker it starts): embedding is the bottleneck,
    and parsing ahead only needs the cycles embedding leaves idle."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: parse at the same priority
        pass


def _folder_titles(
    root: Path, files: list[DocFile], extractor: Extractor, limits: IngestLimits
) -> dict[str, str]:
    """Each subfolder's title, from its index page (Hugo's _index.md, index.md, index.rst, README.md)."""
    titles: dict[str, str] = {}
    for doc in files:
        path = PurePosixPath(doc.source)
        if path.stem in INDEX_STEMS and path.parent.name and str(path.parent) not in titles:
            try:
                titles[str(path.parent)] = extractor.extract(
                    doc.source, read_doc_file(root, doc, limits.max_file_bytes)
                ).title
            except Exception:  # the page's own parse reports why; its folder has no title in the breadcrumb
                continue
    return titles


def _prepare(
    root: Path,
    doc: DocFile,
    existing: dict[str, set[str]],
    embedder: Embedder,
    params: ChunkingParams,
    extractor: Extractor,
    limits: IngestLimits,
    crumbs: list[str],
) -> _Outcome:
    """A file read, parsed and chunked, its sections under the `crumbs` of the folders above it; or why not
    (unchanged since the stored version, or failed)."""
    source = doc.source
    try:
        raw = read_doc_file(root, doc, limits.max_file_bytes)
    except FileRefused as exc:
        return FileIssue(source=source, reason=exc.reason)
    doc_hash = document_version(raw)
    if existing.get(source) == {doc_hash}:
        return _Unchanged(source)
    if not raw.strip():
        document = ParsedDocument(source, PurePosixPath(source).stem, PurePosixPath(source).suffix[1:], [])
        return _Prepared(source, doc_hash, document, [], "empty file")
    try:
        crash_point("parse")
        document = extractor.extract(source, raw)
        for section in document.sections:
            section.trail = [crumb for crumb in crumbs if crumb not in section.trail[:1]] + section.trail
        chunks = chunk_document(document, params, embedder.count_tokens)
    except ExtractionFailed as exc:
        return FileIssue(source=source, reason=exc.message)
    except Exception as exc:  # one bad file must not stop the folder; its reason is reported
        return FileIssue(source=source, reason=f"could not parse: {exc}")
    return _Prepared(source, doc_hash, document, chunks)


def _stored_hash(path: Path) -> str | None:
    """The version a file holds now (as `doc_hash`), or None when it is gone."""
    try:
        return document_version(path.read_bytes())
    except OSError:
        return None


def _write(
    batch: list[_Prepared],
    record: CollectionRecord,
    engine: VectorEngine,
    embedder: Embedder,
    root: Path,
    existing: dict[str, set[str]],
    summary: IngestSummary,
    written: Callable[[], None],
    document_lock: DocumentLock,
) -> None:
    origin = str(root)
    texts = [chunk.embed_text for item in batch for chunk in item.chunks]
    crash_point("embed")
    vectors = iter(embedder.embed_documents(texts) if texts else [])
    for item in batch:
        points = []
        for chunk in item.chunks:
            points.append(
                ChunkPoint(
                    id=point_id(origin, item.source, item.doc_hash, chunk.position),
                    dense=next(vectors),
                    sparse=bm25_document(chunk.embed_text),
                    payload=ChunkPayload(
                        source=item.source,
                        origin=origin,
                        title=item.document.title,
                        section=chunk.heading,
                        section_trail=chunk.section_trail,
                        anchor=chunk.anchor,
                        link=page_link(record.docs_base_url, chunk, item.document.file_type),
                        position=chunk.position,
                        text=chunk.text,
                        tokens=chunk.tokens,
                        doc_hash=item.doc_hash,
                        written_at=time.time(),
                        chunk_hash=chunk.content_hash,
                        file_type=item.document.file_type,
                    ).model_dump(),
                )
            )
        with document_lock(item.source):
            stored = _stored_hash(root / item.source)
            if stored != item.doc_hash:
                # Deleted or replaced since it was read: a delete stays whole, a newer version is the next
                # run's (an upload starts one), and an older one never comes back over a delete.
                if stored is not None:
                    summary.skipped.append(
                        FileIssue(source=item.source, reason="changed while being ingested: read next run")
                    )
                written()
                continue
            engine.upsert(record.live_index, points)
            previous = existing.get(item.source)
            if previous:
                crash_point("replace")
                engine.delete(
                    record.live_index,
                    Filter(
                        must={"origin": origin, "source": item.source}, must_not={"doc_hash": item.doc_hash}
                    ),
                )
        if not item.chunks:
            summary.skipped.append(FileIssue(source=item.source, reason=item.no_text_reason))
        elif previous:
            summary.updated.append(item.source)
        else:
            summary.added.append(item.source)
        summary.chunks_written += len(points)
        written()
