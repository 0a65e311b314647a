"""Request and response bodies of the collections API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from indexes.engine import SearchMode
from indexes.registry import NAME_PATTERN
from indexes.wire import integer
from ingest.embed import EmbeddingSpec
from ragsvc.answer import Turn
from ragsvc.service.retrieval import Source

NAME_RULE = "1-63 letters, digits, '_', '-' or '.', starting with a letter or digit"
CollectionName = Annotated[
    str, Path(pattern=NAME_PATTERN.pattern, description=f"the collection: {NAME_RULE}")
]


class SearchRequest(BaseModel):
    # strict: a JSON true is not a 1, nor "5" a 5; what the schema calls invalid is refused.
    model_config = ConfigDict(strict=True)
    question: str = Field(min_length=1, max_length=4000, examples=["How do I request a GPU?"])
    top_k: integer(ge=1, le=100) | None = None
    mode: SearchMode | None = None
    source_prefix: str | None = Field(None, description="only chunks from this source path")


class SearchResponse(BaseModel):
    results: list[Source]


class QueryRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    question: str = Field(min_length=1, max_length=4000, examples=["How do I request a GPU?"])
    top_k: integer(ge=1, le=50) | None = None
    mode: SearchMode | None = None
    history: list[Turn] = Field(
        default_factory=list,
        max_length=100,
        description="earlier turns, oldest first; a follow-up question is condensed with them before retrieval",
    )
    stream: bool = Field(False, description="send Server-Sent Events: token..., sources, done")


class IngestRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    path: str = Field(min_length=1, max_length=4096, description="a folder on the server's filesystem")
    docs_base_url: str | None = Field(None, description="where the rendered docs live, for source links")
    wait: bool = Field(False, description="answer when the job has finished instead of at once")
    embedding: EmbeddingSpec | None = Field(
        None, description="the embedding model of a new collection; an existing one keeps its own"
    )
    build: bool = Field(True, description="build the live index afterwards (a failed build fails nothing)")


class CreateCollectionRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str = Field(pattern=NAME_PATTERN.pattern, description=NAME_RULE, examples=["handbook"])
    docs_base_url: str | None = Field(None, description="where the rendered docs live, for source links")
    embedding: EmbeddingSpec | None = Field(None, description="the embedding model; unset: the default")


class ReindexRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    embedding: EmbeddingSpec = Field(description="the model to re-embed the stored chunks with")
    keep_old: bool = Field(False, description="keep the old index after the switch instead of dropping it")
    build: bool = Field(True, description="build the new index before the switch")
    wait: bool = Field(False, description="answer when the job has finished instead of at once")
