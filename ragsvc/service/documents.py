"""Documents of a collection: uploads stored in the data dir and ingested by a job, listing what is indexed,
deleting one.

Uploaded files live in data_dir/uploads/<collection>/ and are ingested like any doc folder
(ragsvc.service.ingestion's `ingest_uploads` job).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import BaseModel

from indexes.engine import Filter
from indexes.errors import InvalidRequest, RagsvcError
from indexes.payload import ChunkPayload
from ingest.document import UnsupportedFile
from ingest.extract import SUPPORTED_SUFFIXES
from ingest.pipeline import READINGS, document_version
from ragsvc.jobs.records import Job
from ragsvc.service.access import Principal, Right, require
from ragsvc.service.metering import charged
from ragsvc.service.retrieval import live_record
from ragsvc.service.runtime import Runtime

log = logging.getLogger("ragsvc.documents")

UPLOADS = "uploads"
PARTIAL_SUFFIX = ".part"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


class DocumentNotFound(RagsvcError):
    code = "document_not_found"


class UploadTooLarge(RagsvcError):
    code = "upload_too_large"


class Document(BaseModel):
    source: str
    title: str | None = None
    file_type: str | None = None
    chunks: int = 0
    status: str  # indexed | pending | failed | skipped
    uploaded: bool
    reason: str | None = None  # why an upload failed or was skipped, from the job that last ingested it


class UploadAccepted(BaseModel):
    documents: list[str]
    job: Job


class DocumentDeleted(BaseModel):
    """What a delete matched and removed: the chunks of the live index, and whether a stored upload."""

    source: str
    chunks: int
    upload: bool


def document_key(collection: str, source: str) -> str:
    """The name of one document's lock (runtime.document_locks)."""
    return f"{collection}\n{source}"


def uploads_dir(runtime: Runtime, collection: str) -> Path:
    return Path(runtime.settings.data_dir) / UPLOADS / collection


def safe_filename(filename: str | None) -> str:
    """The file's own name, never a path: '../../x' and 'a/b' become plain names inside the uploads folder."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    name = _SAFE_NAME.sub("_", name).strip(" .")
    if not name:
        raise InvalidRequest(f"upload has no usable file name: {filename!r}")
    if PurePosixPath(name).suffix.lower() not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise UnsupportedFile(f"{name}: unsupported file type; supported: {supported}")
    return name


def _save_upload(runtime: Runtime, collection: str, filename: str | None, stream: BinaryIO) -> str:
    """Store one uploaded file, refusing it once it passes the size limit; returns its name. It is written to
    a temporary file of its own and renamed into place: a partial upload is never seen, and uploads of one
    name at once each replace the file whole."""
    name = safe_filename(filename)
    folder = uploads_dir(runtime, collection)
    folder.mkdir(parents=True, exist_ok=True)
    limit = runtime.settings.max_upload_bytes
    handle, partial_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=PARTIAL_SUFFIX)
    partial = Path(partial_name)
    try:
        written = 0
        with open(handle, "wb") as out:
            while chunk := stream.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise UploadTooLarge(f"{name} is larger than the upload limit of {limit} bytes")
                out.write(chunk)
        partial.replace(folder / name)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return name


# An upload is charged one embedding token per this many bytes stored (English prose and markup run at about
# four characters a token in the tokenizers of the embedding models ragsvc ships).
UPLOAD_BYTES_PER_TOKEN = 4


def upload(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    files: Sequence[tuple[str | None, BinaryIO]],
    *,
    declared_bytes: int = 0,
) -> UploadAccepted:
    """Store the files (name, content) and start a job that ingests them. `declared_bytes`, the request's
    length, refuses an upload too large for the files it holds before anything is stored."""
    limit = runtime.settings.max_upload_bytes * max(len(files), 1)
    if declared_bytes > limit:
        raise UploadTooLarge(f"request of {declared_bytes} bytes is over the upload limit of {limit} bytes")
    require(caller, collection, Right.write)
    record = runtime.registry.get(collection)
    if not files:
        raise InvalidRequest("no files in the upload")
    # Admitted before anything is stored or embedded, on an estimate from the request's length; charged
    # what was stored. (The job's own count of the tokens it embeds is not fed back.)
    estimate = declared_bytes // UPLOAD_BYTES_PER_TOKEN
    with charged(runtime, caller, collection, record.embedding.model, embedding_tokens=estimate) as meter:
        try:
            saved = [_save_upload(runtime, collection, filename, stream) for filename, stream in files]
        except BaseException:
            meter.embedding_tokens = 0
            raise
        stored = sum((uploads_dir(runtime, collection) / name).stat().st_size for name in saved)
        meter.embedding_tokens = stored // UPLOAD_BYTES_PER_TOKEN
    job = runtime.jobs.submit("ingest_uploads", collection, caller, documents=saved)
    return UploadAccepted(documents=saved, job=job)


def list_documents(runtime: Runtime, caller: Principal, collection: str) -> list[Document]:
    require(caller, collection, Right.read)
    return _documents(runtime, collection)


def _documents(runtime: Runtime, collection: str) -> list[Document]:
    record = runtime.registry.get(collection)
    upload_origin = str(uploads_dir(runtime, collection).resolve())
    found: dict[str, Document] = {}
    if runtime.engine.has_index(record.live_index):
        for hit in runtime.engine.scroll(record.live_index, batch=1024):
            p = ChunkPayload.of(hit.payload)
            doc = found.get(p.source)
            if doc is None:
                doc = found[p.source] = Document(
                    source=p.source,
                    title=p.title,
                    file_type=p.file_type,
                    status="indexed",
                    uploaded=p.origin == upload_origin,
                )
            doc.chunks += 1
    folder = uploads_dir(runtime, collection)
    if folder.is_dir():
        outcomes = _last_upload_outcomes(runtime, collection)
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.name not in found:
                status, reason = outcomes.get(path.name, ("pending", None))
                found[path.name] = Document(source=path.name, status=status, uploaded=True, reason=reason)
    return sorted(found.values(), key=lambda d: d.source)


def _last_upload_outcomes(runtime: Runtime, collection: str) -> dict[str, tuple[str, str]]:
    """Uploads that the latest finished upload job could not index: name -> (failed | skipped, reason)."""
    jobs = [j for j in runtime.jobs.store.list(collection) if j.kind == "ingest_uploads"]
    if not jobs or not jobs[-1].finished or not jobs[-1].summary:
        return {}  # none yet, or one still running: what is not indexed is pending
    summary = jobs[-1].summary
    return {
        **{i["source"]: ("skipped", i["reason"]) for i in summary.get("skipped", [])},
        **{i["source"]: ("failed", i["reason"]) for i in summary.get("failed", [])},
    }


def get_document(runtime: Runtime, caller: Principal, collection: str, source: str) -> Document:
    require(caller, collection, Right.read)
    return _document(runtime, collection, source)


def _document(runtime: Runtime, collection: str, source: str) -> Document:
    for doc in _documents(runtime, collection):
        if doc.source == source:
            return doc
    raise DocumentNotFound(f"collection {collection!r} has no document {source!r}")


def delete_document(runtime: Runtime, caller: Principal, collection: str, source: str) -> DocumentDeleted:
    """Remove a document everywhere it is kept: its chunks in every index of the collection (their keys are
    destroyed, so what the engine's files keep of them is unreadable), the stored upload, and its name in
    the collection's job records. DocumentNotFound when none of these held it.

    The document's lock orders it with an ingest writing the same document (which checks, under that lock,
    that the file is still there): the document ends fully in its newest version or fully gone. Indexes
    that a reindex starts meanwhile are found by reading the record again until it lists no new one."""
    require(caller, collection, Right.write)
    runtime.registry.get(collection)
    with runtime.document_locks.hold(document_key(collection, source)):
        chunks, done = 0, set[str]()
        while todo := runtime.registry.get(collection).every_index() - done:
            live = runtime.registry.get(collection).live_index
            for index in sorted(todo):
                if runtime.engine.has_index(index):
                    where = Filter(must={"source": source})
                    if index == live:
                        chunks += runtime.engine.count(index, where)
                    runtime.engine.delete(index, where)
            done |= todo
        upload = _stored_upload(runtime, collection, source)
        if upload is not None:
            upload.unlink(missing_ok=True)
        if runtime.jobs is not None:
            runtime.jobs.store.forget(collection, source)
    if not chunks and upload is None:
        raise DocumentNotFound(f"collection {collection!r} has no document {source!r}")
    return DocumentDeleted(source=source, chunks=chunks, upload=upload is not None)


def _stored_upload(runtime: Runtime, collection: str, source: str) -> Path | None:
    """The stored upload named `source`, when there is one; never a path outside the uploads folder."""
    folder = uploads_dir(runtime, collection)
    if PurePosixPath(source).name != source or source.startswith("."):
        return None
    path = folder / source
    return path if path.is_file() else None


def recover_uploads(runtime: Runtime) -> list[str]:
    """At start-up: remove what uploads interrupted by a crash left, and start an ingest of each collection
    whose stored uploads are not indexed in their stored version and that no unfinished job will ingest
    (a crash between storing an upload and recording its job). Returns those collections."""
    root = Path(runtime.settings.data_dir) / UPLOADS
    if not root.is_dir():
        return []
    started = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for partial in folder.glob(f".*{PARTIAL_SUFFIX}"):
            partial.unlink(missing_ok=True)
        collection = folder.name
        record = runtime.registry.find(collection)
        if record is None or not runtime.engine.has_index(record.live_index):
            continue
        handled = set(_last_upload_outcomes(runtime, collection))  # could not be indexed: not for a rerun
        if _uploads_indexed(runtime, record.live_index, folder, handled):
            continue
        unfinished = [j for j in runtime.jobs.store.list(collection) if not j.finished]
        if any(j.kind in ("ingest_uploads", "ingest_folder") for j in unfinished):
            continue
        log.info("collection %r has uploads not yet ingested: starting an ingest of them", collection)
        runtime.jobs.submit("ingest_uploads", collection, None, documents=[])
        started.append(collection)
    return started


def _uploads_indexed(runtime: Runtime, index: str, folder: Path, handled: set[str]) -> bool:
    """Whether every stored upload in `folder` is in `index` in its stored version, or `handled`."""
    versions: dict[str, set[str]] = {}
    origin = str(folder.resolve())
    for hit in runtime.engine.scroll(index, Filter(must={"origin": origin}), batch=1024):
        versions.setdefault(hit.payload["source"], set()).add(hit.payload["doc_hash"])
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and path.name not in handled:
            # Indexed by an older reading counts: an upgrade re-reads uploads on their collection's next
            # ingest, not all at once at start-up.
            raw = path.read_bytes()
            if not versions.get(path.name, set()) & {document_version(raw, r) for r in READINGS}:
                return False
    return True


def delete_uploads(runtime: Runtime, collection: str) -> None:
    """Every stored upload of a collection being deleted (the caller checked its right to)."""
    shutil.rmtree(uploads_dir(runtime, collection), ignore_errors=True)


class Section(BaseModel):
    """One section of a document in full: every chunk under its heading trail, in order."""

    collection: str
    source: str
    section: str
    link: str | None
    text: str


def read_section(runtime: Runtime, caller: Principal, collection: str, source: str, section: str) -> Section:
    """The whole text of a cited section (its `source` and `section` as a citation names them), from the
    document's newest version."""
    require(caller, collection, Right.read)
    with live_record(runtime, collection) as record:
        # Section titles are sealed with the text (indexes/sealed.py): filter by source, then match here.
        where = Filter(must={"source": source})
        hits = [
            h for h in runtime.engine.scroll(record.live_index, where) if h.payload.get("section") == section
        ]
    if not hits:
        raise DocumentNotFound(f"collection {collection!r} has no section {section!r} in {source!r}")
    newest = max(hits, key=lambda h: h.payload.get("written_at", 0)).payload["doc_hash"]
    chunks = sorted((h for h in hits if h.payload["doc_hash"] == newest), key=lambda h: h.payload["position"])
    return Section(
        collection=collection,
        source=source,
        section=section,
        link=chunks[0].payload.get("link"),
        text="\n\n".join(h.payload.get("text", "") for h in chunks),
    )
