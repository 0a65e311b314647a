"""Documents of a collection: uploads stored in the data dir, listing what is indexed, deleting one.

Uploaded files live in data_dir/uploads/<collection>/ and are ingested like any doc folder, by a job.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import BaseModel

from indexes.engine import Filter
from indexes.errors import InvalidRequest, RagsvcError
from ingest.extract import SUPPORTED_SUFFIXES
from ingest.parse import UnsupportedFile
from ragsvc.services import Services

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


def uploads_dir(services: Services, collection: str) -> Path:
    return Path(services.settings.data_dir) / UPLOADS / collection


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


def save_upload(services: Services, collection: str, filename: str | None, stream: BinaryIO) -> str:
    """Store one uploaded file, refusing it once it passes the size limit; returns its name."""
    name = safe_filename(filename)
    folder = uploads_dir(services, collection)
    folder.mkdir(parents=True, exist_ok=True)
    limit = services.settings.max_upload_bytes
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


def list_documents(services: Services, collection: str) -> list[Document]:
    record = services.registry.get(collection)
    upload_origin = str(uploads_dir(services, collection).resolve())
    found: dict[str, Document] = {}
    if services.engine.has_index(record.live_index):
        for hit in services.engine.scroll(record.live_index, batch=1024):
            p = hit.payload
            doc = found.get(p["source"])
            if doc is None:
                doc = found[p["source"]] = Document(
                    source=p["source"],
                    title=p.get("title"),
                    file_type=p.get("file_type"),
                    status="indexed",
                    uploaded=p.get("origin") == upload_origin,
                )
            doc.chunks += 1
    folder = uploads_dir(services, collection)
    if folder.is_dir():
        outcomes = _last_upload_outcomes(services, collection)
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.name not in found:
                status, reason = outcomes.get(path.name, ("pending", None))
                found[path.name] = Document(source=path.name, status=status, uploaded=True, reason=reason)
    return sorted(found.values(), key=lambda d: d.source)


def _last_upload_outcomes(services: Services, collection: str) -> dict[str, tuple[str, str]]:
    """Uploads that the latest finished upload job could not index: name -> (failed | skipped, reason)."""
    if services.jobs is None:
        return {}
    jobs = [j for j in services.jobs.store.list(collection) if j.kind == "ingest_uploads"]
    if not jobs or not jobs[-1].finished or not jobs[-1].summary:
        return {}  # none yet, or one still running: what is not indexed is pending
    summary = jobs[-1].summary
    return {
        **{i["source"]: ("skipped", i["reason"]) for i in summary.get("skipped", [])},
        **{i["source"]: ("failed", i["reason"]) for i in summary.get("failed", [])},
    }


def get_document(services: Services, collection: str, source: str) -> Document:
    for doc in list_documents(services, collection):
        if doc.source == source:
            return doc
    raise DocumentNotFound(f"collection {collection!r} has no document {source!r}")


def delete_document(services: Services, collection: str, source: str) -> None:
    """Remove a document everywhere it is kept: its chunks in every index of the collection (their keys are
    destroyed, so what the engine's files keep of them is unreadable), the stored upload, and its name in
    the collection's job records. The write lock keeps a reindex from copying it meanwhile."""
    get_document(services, collection, source)
    with services.write_locks.hold(collection):
        record = services.registry.get(collection)
        for index in record.every_index():
            if services.engine.has_index(index):
                services.engine.delete(index, Filter(must={"source": source}))
        (uploads_dir(services, collection) / source).unlink(missing_ok=True)
        if services.jobs is not None:
            services.jobs.store.forget(collection, source)


def delete_uploads(services: Services, collection: str) -> None:
    shutil.rmtree(uploads_dir(services, collection), ignore_errors=True)
