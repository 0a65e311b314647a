"""Routes for collections: list, describe, create, delete, ingest a server-side folder, build, reindex, search,
query. Each validates its body and makes one service call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from indexes.engine import BuildReport
from indexes.errors import RagsvcError
from ragsvc.answer import Answer
from ragsvc.api.deps import MachineLocalDep, PrincipalDep, RuntimeDep
from ragsvc.api.errors import AUTH_ERRORS, error_body, errors
from ragsvc.api.schemas import (
    CollectionName,
    CreateCollectionRequest,
    IngestRequest,
    QueryRequest,
    ReindexRequest,
    SearchRequest,
    SearchResponse,
)
from ragsvc.jobs.records import Job
from ragsvc.service import answers, collections, ingestion, retrieval
from ragsvc.service import reindex as reindexing
from ragsvc.service.answers import AnswerStream
from ragsvc.service.collections import CollectionInfo

# 503: the index engine (a Qdrant server) or the embedding endpoint is unreachable.
router = APIRouter(prefix="/collections", tags=["collections"], responses=errors(*AUTH_ERRORS, 503))


@router.get("")
def list_collections(runtime: RuntimeDep, caller: PrincipalDep) -> list[CollectionInfo]:
    return collections.list_collections(runtime, caller)


@router.get("/{name}", responses=errors(404, 422))
def get_collection(name: CollectionName, runtime: RuntimeDep, caller: PrincipalDep) -> CollectionInfo:
    return collections.describe(runtime, caller, name)


@router.delete("/{name}", status_code=204, responses=errors(404, 409, 422))
def delete_collection(name: CollectionName, runtime: RuntimeDep, caller: PrincipalDep) -> None:
    collections.delete_collection(runtime, caller, name)


@router.post("", status_code=201, responses=errors(409, 422))
def create_collection(
    body: CreateCollectionRequest, runtime: RuntimeDep, caller: PrincipalDep
) -> CollectionInfo:
    return ingestion.create_collection(
        runtime, caller, body.name, docs_base_url=body.docs_base_url, embedding=body.embedding
    )


@router.post(
    "/{name}/ingest",
    status_code=202,
    responses={200: {"model": Job, "description": "the finished job, when wait was sent"}}
    | errors(403, 404, 409, 415, 422),
)
async def ingest(
    name: CollectionName,
    body: IngestRequest,
    runtime: RuntimeDep,
    caller: PrincipalDep,
    machine_local: MachineLocalDep,
    response: Response,
) -> Job:
    """Start a job that ingests a folder on the server's filesystem, under one of its ingest roots
    (RAGSVC_INGEST_ROOTS), with an admin key; poll GET /jobs/{id}, or send wait."""
    job = await run_in_threadpool(
        ingestion.submit_ingest,
        runtime,
        caller,
        name,
        body.path,
        docs_base_url=body.docs_base_url,
        embedding=body.embedding,
        build=body.build,
        wait=body.wait,
        machine_local=machine_local,
    )
    response.status_code = 200 if body.wait else 202
    return job


@router.post("/{name}/build", responses=errors(404, 409, 422))
def build(name: CollectionName, runtime: RuntimeDep, caller: PrincipalDep) -> BuildReport:
    """Build the collection's live index now and return when it is switched in; searches go on meanwhile
    (the embedded engine builds in a process of its own). Ingestion jobs build on their own afterwards."""
    return ingestion.build_now(runtime, caller, name)


@router.post(
    "/{name}/reindex",
    status_code=202,
    responses={200: {"model": Job, "description": "the finished job, when wait was sent"}}
    | errors(404, 409, 422),
)
async def reindex(
    name: CollectionName, body: ReindexRequest, runtime: RuntimeDep, caller: PrincipalDep, response: Response
) -> Job:
    """Start a job that re-embeds the collection's chunks with another model and switches to it; the old
    index answers queries until then. Poll GET /jobs/{id}, or send wait."""
    job = await run_in_threadpool(
        reindexing.submit_reindex,
        runtime,
        caller,
        name,
        body.embedding,
        keep_old=body.keep_old,
        build=body.build,
        wait=body.wait,
    )
    response.status_code = 200 if body.wait else 202
    return job


@router.post("/{name}/search", responses=errors(404, 409, 422))
def search(
    name: CollectionName, body: SearchRequest, runtime: RuntimeDep, caller: PrincipalDep
) -> SearchResponse:
    results = retrieval.search(
        runtime,
        caller,
        name,
        body.question,
        top_k=body.top_k,
        mode=body.mode,
        source_prefix=body.source_prefix,
    )
    return SearchResponse(results=results)


@router.post(
    "/{name}/query",
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true"}}
    | errors(404, 409, 422, 502, 504),
)
async def query(
    name: CollectionName, body: QueryRequest, runtime: RuntimeDep, caller: PrincipalDep
) -> Answer:
    asked = {"history": body.history, "top_k": body.top_k, "mode": body.mode}
    if not body.stream:
        return await run_in_threadpool(answers.ask, runtime, caller, name, body.question, **asked)
    # Retrieval and prompt errors still answer as plain JSON errors; only the LLM's reply is streamed.
    stream = await run_in_threadpool(answers.start_stream, runtime, caller, name, body.question, **asked)
    return EventSourceResponse(_events(stream), ping=15)


async def _events(stream: AnswerStream) -> AsyncIterator[dict[str, str]]:
    """The answer as Server-Sent Events: token..., sources, done; or an error event where it broke off."""
    try:
        async for event in stream.events():
            if event.kind == "token":
                yield {"event": "token", "data": json.dumps({"text": event.text})}
            else:
                answer = event.answer
                sources = [s.model_dump() for s in answer.sources]
                closest = [s.model_dump() for s in answer.closest_pages]
                yield {"event": "sources", "data": json.dumps({"sources": sources, "closest_pages": closest})}
                done = {
                    "answer": answer.answer,
                    "refused": answer.refused,
                    "truncated": answer.truncated,
                    "usage": answer.usage.model_dump(),
                }
                yield {"event": "done", "data": json.dumps(done)}
    except RagsvcError as exc:
        yield {"event": "error", "data": json.dumps(error_body(exc.code, exc.message))}
