"""The MCP front end: tools that list, search and ask collections and read a cited section, over the same
service functions as the REST API; served at /mcp (streamable HTTP) by the app and on stdio by `ragsvc mcp`.

A failed call is a tool result with isError and the same code and message the REST API gives, never a
dropped session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Literal, TypeVar

from fastapi.concurrency import run_in_threadpool
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from indexes.errors import RagsvcError
from ragsvc import __version__
from ragsvc.service import answers, collections, documents, retrieval
from ragsvc.service.access import Principal
from ragsvc.service.retrieval import Source
from ragsvc.service.runtime import Runtime

SECTION_SEPARATOR = " > "
MAX_TOP_K = 50

INSTRUCTIONS = (
    "ragsvc answers from documentation collections with citations. Call list_collections first; search a "
    "collection for passages, or ask it for a grounded answer whose [n] markers number its citations (a "
    "refusal cites nothing and lists the closest pages instead); "
    "read_section returns a cited section in full. Every result names its source file, section trail and "
    "link."
)


class Collection(BaseModel):
    name: str
    embedding_model: str
    created_at: str


class Passage(BaseModel):
    """A cited piece of a document: where it is (file, heading trail, link) and what it says."""

    number: int = Field(description="the [n] an answer cites it by")
    source: str = Field(description="the document's path in the collection")
    section: str = Field(description="the heading trail, joined by ' > '")
    section_trail: list[str]
    link: str | None = Field(description="a URL that opens the section, when the collection has one")
    score: float
    text: str


class SearchResult(BaseModel):
    collection: str
    query: str
    passages: list[Passage]


class CitedAnswer(BaseModel):
    collection: str
    question: str
    answer: str
    citations: list[Passage] = Field(description="what the answer's [n] markers cite; none for a refusal")
    refused: bool = Field(description="the documentation does not answer the question (the answer says so)")
    closest_pages: list[Passage] = Field(
        description="when the answer cites nothing (a refusal): the passages nearest to the question, which "
        "are not its sources"
    )


class Section(BaseModel):
    collection: str
    source: str
    section: str
    section_trail: list[str]
    link: str | None
    text: str


class CollectionList(BaseModel):
    collections: list[Collection]


SearchMode = Literal["dense", "sparse", "hybrid"]


def passages(sources: list[Source]) -> list[Passage]:
    return [
        Passage(
            number=n,
            source=s.source,
            section=s.section,
            section_trail=trail(s.section),
            link=s.link,
            score=s.score,
            text=s.text,
        )
        for n, s in enumerate(sources, 1)
    ]


def scoped_documents(
    runtime: Runtime, caller: Principal, collection: str, source_prefix: str | None, paths: list[str] | None
) -> list[str] | None:
    """The documents a search may read: those under the prefix and in the list; None when unscoped."""
    if source_prefix is None:
        return paths
    listed = documents.list_documents(runtime, caller, collection)
    return [
        d.source
        for d in listed
        if d.source.startswith(source_prefix) and (paths is None or d.source in paths)
    ]


def search_collection(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    query: str,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    source_prefix: str | None = None,
    paths: list[str] | None = None,
) -> SearchResult:
    scope = scoped_documents(runtime, caller, collection, source_prefix, paths)
    found = retrieval.search(runtime, caller, collection, query, top_k=top_k, mode=mode, documents=scope)
    return SearchResult(collection=collection, query=query, passages=passages(found))


T = TypeVar("T")


async def _call(function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """A service function on a worker thread; a ragsvc error becomes the tool's error result."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except RagsvcError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from exc


# Who is calling, from the request's headers (HTTP) or None (stdio): the same principal the REST API would
# give those headers. Without access control it is the local user whatever the headers say.
PrincipalOf = Callable[[Mapping[str, str] | None], Principal]


def trail(section: str) -> list[str]:
    return section.split(SECTION_SEPARATOR) if section else []


def build_mcp(runtime_of: Callable[[], Runtime], principal_of: PrincipalOf) -> MCPServer:
    """The MCP server over the Runtime that `runtime_of` returns when a tool runs; every tool calls the same
    service entry point as the REST API, with the caller `principal_of` finds in the request."""
    mcp = MCPServer("ragsvc", version=__version__, instructions=INSTRUCTIONS)

    def who(ctx: Context) -> Principal:
        return principal_of(ctx.headers)

    @mcp.tool()
    async def list_collections(ctx: Context) -> CollectionList:
        """The collections this server holds that you may read: ask or search one by its name."""
        records = await _call(collections.list_records, runtime_of(), who(ctx))
        return CollectionList(
            collections=[
                Collection(
                    name=r.name, embedding_model=r.embedding.model, created_at=r.created_at.isoformat()
                )
                for r in records
            ]
        )

    @mcp.tool()
    async def search(
        ctx: Context,
        collection: str,
        query: str,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 5,
        mode: SearchMode | None = None,
        source_prefix: Annotated[
            str | None, Field(description="only documents whose path starts with this, e.g. 'guides/'")
        ] = None,
        documents: Annotated[
            list[str] | None, Field(description="only these documents (their paths)")
        ] = None,
    ) -> SearchResult:
        """Passages of a collection that match the query, best first, each with its source, section and link."""
        caller = who(ctx)
        return await _call(
            search_collection, runtime_of(), caller, collection, query, top_k, mode, source_prefix, documents
        )

    @mcp.tool()
    async def ask(
        ctx: Context,
        collection: str,
        question: str,
        top_k: Annotated[int | None, Field(ge=1, le=MAX_TOP_K)] = None,
        mode: SearchMode | None = None,
    ) -> CitedAnswer:
        """A grounded answer from the collection's documents; its [n] markers cite the numbered citations."""
        caller = who(ctx)
        answer = await _call(answers.ask, runtime_of(), caller, collection, question, top_k=top_k, mode=mode)
        return CitedAnswer(
            collection=collection,
            question=question,
            answer=answer.answer,
            citations=passages(answer.sources),
            refused=answer.refused,
            closest_pages=passages(answer.closest_pages),
        )

    @mcp.tool()
    async def read_section(ctx: Context, collection: str, source: str, section: str) -> Section:
        """The whole text of one section of a document, as cited by search or ask (source and section)."""
        found = await _call(documents.read_section, runtime_of(), who(ctx), collection, source, section)
        return Section(**found.model_dump(), section_trail=trail(found.section))

    return mcp
