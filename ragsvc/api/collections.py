"""Routes for collections: list, describe, delete, ingest a server-side folder, search, query."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from ingest.pipeline import IngestSummary
from ragsvc import collections
from ragsvc.answer import Answer, answer_question
from ragsvc.api.deps import ServicesDep
from ragsvc.api.schemas import IngestRequest, QueryRequest, SearchRequest, SearchResponse
from ragsvc.collections import CollectionInfo
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


@router.post("/{name}/ingest")
async def ingest(name: str, body: IngestRequest, services: ServicesDep) -> IngestSummary:
    return await run_in_threadpool(
        collections.ingest_path, services, name, Path(body.path), docs_base_url=body.docs_base_url
    )


@router.post("/{name}/search")
def search(name: str, body: SearchRequest, services: ServicesDep) -> SearchResponse:
    results = retrieve(
        services, name, body.question, top_k=body.top_k, mode=body.mode, source_prefix=body.source_prefix
    )
    return SearchResponse(results=results)


@router.post("/{name}/query")
def query(name: str, body: QueryRequest, services: ServicesDep) -> Answer:
    return answer_question(services, name, body.question, top_k=body.top_k, mode=body.mode)
