"""Documents of a collection: uploads stored in the data dir and ingested by a job, listing what is indexed,
deleting one.

Uploaded files live in data_dir/uploads/<collection>/ and are ingested like any doc folder
(ragsvc.service.ingestion's `ingest_uploads` job).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import BaseModel

from indexes.engine import Filter
from indexes.errors import InvalidRequest, RagsvcError
from indexes.payload import ChunkPayload
from ingest.document import UnsupportedFile
from ingest.extract import SUPPORTED_SUFFIXES
from ragsvc.jobs.records import Job
from ragsvc.service.access import Principal, Right, require
from ragsvc.service.metering import charged
from ragsvc.service.retrieval import live_record
from ragsvc.service.runtime import Runtime

UPLOADS = "uploads"
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
    """Store one uploaded file, refusing it once it passes the size limit; returns its name."""
    name = safe_filename(filename)
    folder = uploads_dir(runtime, collection)
    folder.mkdir(parents=True, exist_ok=True)
    limit = runtime.settings.max_upload_bytes
    partial = folder / f".{name}.part"
    written = 0
    with open(partial, "wb") as out:
        while chunk := stream.read(1 << 20):
            written += len(chunk)
            if written > limit:
                out.close()
                partial.unlink(missing_ok=True)
                raise UploadTooLarge(f"{name} is larger than the upload limit of {limit} bytes")
            out.write(chunk)
    partial.replace(folder / name)
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


def delete_document(runtime: Runtime, caller: Principal, collection: str, source: str) -> None:
    """Remove a document everywhere it is kept: its chunks in every index of the collection (their keys are
    destroyed, so what the engine's files keep of them is unreadable), the stored upload, and its name in
    the collection's job records. The write lock keeps a reindex from copying it meanwhile."""
    require(caller, collection, Right.write)
    _document(runtime, collection, source)
    with runtime.write_locks.hold(collection):
        record = runtime.registry.get(collection)
        for index in record.every_index():
            if runtime.engine.has_index(index):
                runtime.engine.delete(index, Filter(must={"source": source}))
        (uploads_dir(runtime, collection) / source).unlink(missing_ok=True)
        if runtime.jobs is not None:
            runtime.jobs.store.forget(collection, source)


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
