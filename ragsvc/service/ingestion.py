"""Ingestion: the one place that creates a collection, ingests a folder into it (inline or as a job), and
applies the index-build policy: after an ingest the live index is built, and a failed build fails nothing (it
is reported in the result, and the index serves unbuilt until a later build)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from indexes.build import build_after_ingest
from indexes.engine import BuildReport
from indexes.errors import EmbeddingMismatch, InvalidRequest
from indexes.registry import CollectionRecord, validate_name
from ingest.embed import Embedder, EmbeddingSpec
from ingest.pipeline import IngestLimits, IngestSummary, Progress
from ingest.pipeline import ingest_folder as ingest_into
from ragsvc.folders import allowed_folder
from ragsvc.jobs.queue import JobHandler
from ragsvc.jobs.records import Job
from ragsvc.service.access import LOCAL, Principal, Right, require
from ragsvc.service.collections import CollectionExists, CollectionInfo, describe
from ragsvc.service.documents import document_key, uploads_dir
from ragsvc.service.embeddings import (
    chosen_embedder,
    chunking_for,
    chunking_for_model,
    embedder_for,
    resolve,
    same_model,
)
from ragsvc.service.repair import point_live_alias, repair
from ragsvc.service.runtime import Runtime


class IngestResult(IngestSummary):
    index_build: dict[str, Any] | None = None  # what building the live index afterwards did; None: not asked


def folder_to_ingest(path: Path | str) -> Path:
    """The folder `path` names, absolute; InvalidRequest when it is not one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InvalidRequest(f"{path} is not a folder")
    return folder.resolve()


def build_index(runtime: Runtime, index: str) -> dict[str, Any]:
    """The build policy: build `index` now (at once when there is little new), and report a failure instead
    of raising it, since the chunks are stored and the index serves unbuilt meanwhile."""
    return build_after_ingest(runtime.engine, index)


def _create(runtime: Runtime, name: str, embedder: Embedder, docs_base_url: str | None) -> CollectionRecord:
    """A new collection on `embedder`, its live index made and reachable by the collection's name where the
    engine keeps aliases; on failure it is removed again: never a half-created collection. The caller
    holds the collection's write lock."""
    identity = embedder.identity(chunking_for_model(runtime.settings, embedder).label())
    url = getattr(embedder, "url", None)
    record, _ = runtime.registry.ensure(name, identity, docs_base_url, embedding_url=url)
    created = False
    try:
        if not runtime.engine.has_index(record.live_index):
            runtime.engine.create_index(record.live_index, embedder.dimensions)
            created = True
        point_live_alias(runtime, record, new=True)
    except BaseException:
        runtime.registry.remove(record.name)
        if created:
            runtime.engine.drop_index(record.live_index)
        raise
    return record


def create_collection(
    runtime: Runtime,
    caller: Principal,
    name: str,
    *,
    docs_base_url: str | None = None,
    embedding: EmbeddingSpec | None = None,
) -> CollectionInfo:
    """An empty collection on the asked-for embedding model (else the server's default), ready for uploads."""
    validate_name(name)
    require(caller, name, Right.admin)
    with runtime.write_locks.hold(name):
        if runtime.registry.find(name) is not None:
            raise CollectionExists(f"collection {name!r} already exists")
        _create(runtime, name, chosen_embedder(runtime, embedding), docs_base_url)
    return describe(runtime, caller, name)


def ingest_folder(
    runtime: Runtime,
    caller: Principal,
    name: str,
    path: Path | str,
    *,
    docs_base_url: str | None = None,
    embedding: EmbeddingSpec | None = None,
    build: bool = True,
    progress: Progress | None = None,
) -> IngestResult:
    """Ingest a folder in this process; unchanged files are skipped. A new collection is made on `embedding`
    (or the default model); an existing one keeps its own. With `build`, the live index is built afterwards
    (`build_index`'s policy)."""
    validate_name(name)
    folder = folder_to_ingest(path)
    require(caller, name, Right.write if runtime.registry.find(name) else Right.admin)
    # One writer per collection at a time, in this process or (shared registry) in any; searches never wait.
    with runtime.write_locks.hold(name):
        repair(runtime, name)
        record = runtime.registry.find(name)
        if record is None:
            embedder = chosen_embedder(runtime, embedding)
            params = chunking_for_model(runtime.settings, embedder)
            record = _create(runtime, name, embedder, docs_base_url)
        else:
            if embedding is not None and not same_model(record, resolve(runtime.settings, embedding)):
                raise EmbeddingMismatch(
                    f"collection {name!r} is embedded with {record.embedding.describe()}; to switch it to "
                    f"{embedding.model}, run `ragsvc collections reindex {name} --embedding-model "
                    f"{embedding.model}`"
                )
            embedder = embedder_for(runtime, record)
            params = chunking_for(record)
            if not runtime.engine.has_index(record.live_index):
                runtime.engine.create_index(record.live_index, embedder.dimensions)
        s = runtime.settings
        summary = ingest_into(
            folder,
            record,
            engine=runtime.engine,
            embedder=embedder,
            params=params,
            progress=progress,
            limits=IngestLimits(
                max_file_bytes=s.max_file_bytes,
                parse_timeout=s.parse_timeout,
                parse_memory_bytes=s.parse_memory_mb << 20,
                batch_chunks=s.ingest_batch_chunks,
            ),
            document_lock=lambda source: runtime.document_locks.hold(document_key(name, source)),
        )
        runtime.registry.touch(name)
    result = IngestResult(**summary.model_dump())
    if build:
        if progress:
            progress(summary.progress("building index"))
        # Built in a process of its own (Edge): queries go on meanwhile; a no-op below Edge's threshold.
        result.index_build = build_index(runtime, runtime.registry.get(name).live_index)
    return result


def submit_ingest(
    runtime: Runtime,
    caller: Principal,
    name: str,
    path: Path | str,
    *,
    docs_base_url: str | None = None,
    embedding: EmbeddingSpec | None = None,
    build: bool = True,
    wait: bool = False,
    machine_local: bool = False,
) -> Job:
    """Start a job that ingests a folder on the server's machine; with `wait`, return it once it has finished.
    Reading the server's own files is an admin's to allow, and only under the ingest roots
    (RAGSVC_INGEST_ROOTS); a `machine_local` caller (the CLI of this machine's user) may read any folder its
    user can."""
    validate_name(name)
    require(caller, name, Right.admin)
    roots = [] if machine_local else runtime.settings.ingest_roots
    folder = allowed_folder(path, roots, machine_local=machine_local)
    params = {
        "path": str(folder),
        "docs_base_url": docs_base_url,
        "embedding": embedding.model_dump(exclude_none=True) if embedding else None,
    }
    if not build:
        params["build"] = False
    job = runtime.jobs.submit("ingest_folder", name, caller, **params)
    return runtime.jobs.wait(job.id) if wait else job


def build_now(runtime: Runtime, caller: Principal, name: str) -> BuildReport:
    """Build the collection's live index now, on demand; a failure is this call's error (IndexBuildFailed)."""
    require(caller, name, Right.admin)
    return runtime.engine.build(runtime.registry.get(name).live_index)


def submitter(job: Job) -> Principal:
    """Whose rights a job runs with: its submitter's (records from before jobs kept one: the local user's)."""
    return job.principal or LOCAL


def job_handlers(runtime: Runtime) -> dict[str, JobHandler]:
    def ingest_folder_job(job: Job, progress: Progress) -> dict[str, Any]:
        params = job.params
        embedding = EmbeddingSpec.model_validate(params["embedding"]) if params.get("embedding") else None
        result = ingest_folder(
            runtime,
            submitter(job),
            job.collection,
            params["path"],
            docs_base_url=params.get("docs_base_url"),
            embedding=embedding,
            build=params.get("build", True),
            progress=progress,
        )
        return result.model_dump()

    def ingest_uploads_job(job: Job, progress: Progress) -> dict[str, Any]:
        folder = uploads_dir(runtime, job.collection)
        folder.mkdir(parents=True, exist_ok=True)
        return ingest_folder(runtime, submitter(job), job.collection, folder, progress=progress).model_dump()

    return {"ingest_folder": ingest_folder_job, "ingest_uploads": ingest_uploads_job}
