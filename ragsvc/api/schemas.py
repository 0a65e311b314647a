"""Request and response bodies of the collections API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from indexes.engine import SearchMode
from ingest.embed import EmbeddingSpec
from ragsvc.answer import Turn
from ragsvc.service.retrieval import Source


class SearchRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000, examples=["How do I request a GPU?"])
    top_k: int | None = Field(None, ge=1, le=100)
    mode: SearchMode | None = None
    source_prefix: str | None = Field(None, description="only chunks from this source path")


class SearchResponse(BaseModel):
    results: list[Source]


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000, examples=["How do I request a GPU?"])
    top_k: int | None = Field(None, ge=1, le=50)
    mode: SearchMode | None = None
    history: list[Turn] = Field(
        default_factory=list,
        max_length=100,
        description="earlier turns, oldest first; a follow-up question is condensed with them before retrieval",
    )
    stream: bool = Field(False, description="send Server-Sent Events: token..., sources, done")


class IngestRequest(BaseModel):
    path: str = Field(min_length=1, description="a folder on the server's filesystem")
    docs_base_url: str | None = Field(None, description="where the rendered docs live, for source links")
    wait: bool = Field(False, description="answer when the job has finished instead of at once")
    embedding: EmbeddingSpec | None = Field(
        None, description="the embedding model of a new collection; an existing one keeps its own"
    )
    build: bool = Field(True, description="build the live index afterwards (a failed build fails nothing)")


class CreateCollectionRequest(BaseModel):
    name: str = Field(examples=["handbook"])
    docs_base_url: str | None = Field(None, description="where the rendered docs live, for source links")
    embedding: EmbeddingSpec | None = Field(None, description="the embedding model; unset: the default")


class ReindexRequest(BaseModel):
    embedding: EmbeddingSpec = Field(description="the model to re-embed the stored chunks with")
    keep_old: bool = Field(False, description="keep the old index after the switch instead of dropping it")
    build: bool = Field(True, description="build the new index before the switch")
    wait: bool = Field(False, description="answer when the job has finished instead of at once")
