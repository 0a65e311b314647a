"""Routes for collections: list, describe, create, delete, ingest a server-side folder, reindex, search,
query."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from indexes.engine import BuildReport
from indexes.errors import RagsvcError
from indexes.registry import validate_name
from ingest.jobs import Job
from ragsvc import collections
from ragsvc.access.principals import AdminOnly
from ragsvc.answer import Answer, answer_question, prepare, stream_answer
from ragsvc.api.auth import IdentityDep
from ragsvc.api.deps import MachineLocalDep, ServicesDep
from ragsvc.api.errors import error_body
from ragsvc.api.schemas import (
    CreateCollectionRequest,
    IngestRequest,
    QueryRequest,
    ReindexRequest,
    SearchRequest,
    SearchResponse,
)
from ragsvc.collections import CollectionInfo
from ragsvc.folders import allowed_folder
from ragsvc.retrieval import retrieve

router = APIRouter(prefix="/collections", tags=["collections"])


@router.get("")
def list_collections(services: ServicesDep) -> list[CollectionInfo]:
    return collections.list_collections(services)


@router.get("/{name}")
def get_collection(name: str, services: ServicesDep) -> CollectionInfo:
    return collections.describe(services, name)


@router.delete("/{name}", status_code=204)
def delete_collection(name: str, services: ServicesDep) -> None:
    collections.delete_collection(services, name)


@router.post("", status_code=201)
def create_collection(body: CreateCollectionRequest, services: ServicesDep) -> CollectionInfo:
    return collections.create_collection(
        services, body.name, docs_base_url=body.docs_base_url, embedding=body.embedding
    )


@router.post("/{name}/ingest", status_code=202)
async def ingest(
    name: str,
    body: IngestRequest,
    services: ServicesDep,
    identity: IdentityDep,
    machine_local: MachineLocalDep,
    response: Response,
) -> Job:
    """Start a job that ingests a folder on the server's filesystem, under one of its ingest roots
    (RAGSVC_INGEST_ROOTS); poll GET /jobs/{id}, or send wait."""
    validate_name(name)
    if not identity.user.admin:  # reading the server's own files is an admin's to allow
        raise AdminOnly("ingesting a server-side folder needs an admin key; upload the files instead")
    path = allowed_folder(body.path, services.settings.ingest_roots, machine_local=machine_local)
    embedding = body.embedding.model_dump(exclude_none=True) if body.embedding else None
    job = services.jobs.submit(
        "ingest_folder", name, path=str(path), docs_base_url=body.docs_base_url, embedding=embedding
    )
    if body.wait:
        job = await run_in_threadpool(services.jobs.wait, job.id)
        response.status_code = 200
    return job


@router.post("/{name}/build")
def build(name: str, services: ServicesDep) -> BuildReport:
    """Build the collection's live index now and return when it is switched in; searches go on meanwhile
    (the embedded engine builds in a process of its own). Ingestion jobs build on their own afterwards."""
    return services.engine.build(services.registry.get(name).live_index)


@router.post("/{name}/reindex", status_code=202)
async def reindex(name: str, body: ReindexRequest, services: ServicesDep, response: Response) -> Job:
    """Start a job that re-embeds the collection's chunks with another model and switches to it; the old
    index answers queries until then. Poll GET /jobs/{id}, or send wait."""
    # The model is opened here, so an unknown model or a dead endpoint is this request's error, not the job's.
    await run_in_threadpool(collections.check_reindex, services, name, body.embedding)
    job = services.jobs.submit(
        "reindex", name, embedding=body.embedding.model_dump(exclude_none=True), keep_old=body.keep_old
    )
    if body.wait:
        job = await run_in_threadpool(services.jobs.wait, job.id)
        response.status_code = 200
    return job


@router.post("/{name}/search")
def search(name: str, body: SearchRequest, services: ServicesDep) -> SearchResponse:
    results = retrieve(
        services, name, body.question, top_k=body.top_k, mode=body.mode, source_prefix=body.source_prefix
    )
    return SearchResponse(results=results)


@router.post(
    "/{name}/query",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true"}
    },
)
async def query(name: str, body: QueryRequest, services: ServicesDep) -> Answer:
    if not body.stream:
        return await run_in_threadpool(
            answer_question,
            services,
            name,
            body.question,
            history=body.history,
            top_k=body.top_k,
            mode=body.mode,
        )
    # Retrieval and prompt errors still answer as plain JSON errors; only the LLM's reply is streamed.
    prompt = await run_in_threadpool(
        prepare, services, name, body.question, history=body.history, top_k=body.top_k, mode=body.mode
    )

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for event in stream_answer(services, name, prompt):
                if event.kind == "token":
                    yield {"event": "token", "data": json.dumps({"text": event.text})}
                else:
                    answer = event.answer
                    sources = [s.model_dump() for s in answer.sources]
                    yield {"event": "sources", "data": json.dumps({"sources": sources})}
                    done = {"answer": answer.answer, "usage": answer.usage.model_dump()}
                    yield {"event": "done", "data": json.dumps(done)}
        except RagsvcError as exc:
            yield {"event": "error", "data": json.dumps(error_body(exc.code, exc.message))}

    return EventSourceResponse(events(), ping=15)
