"""The MCP front end: tools that list, search and ask collections and read a cited section, over the same
service functions as the REST API; served at /mcp (streamable HTTP) by the app and on stdio by `ragsvc mcp`.

A failed call is a tool result with isError and the same code and message the REST API gives, never a
dropped session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi.concurrency import run_in_threadpool
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from indexes.engine import Filter
from indexes.errors import RagsvcError
from ragsvc import __version__
from ragsvc.answer import answer_question
from ragsvc.documents import DocumentNotFound, list_documents
from ragsvc.retrieval import Source, live_record, retrieve
from ragsvc.services import Services

SECTION_SEPARATOR = " > "
MAX_TOP_K = 50

INSTRUCTIONS = (
    "ragsvc answers from documentation collections with citations. Call list_collections first; search a "
    "collection for passages, or ask it for a grounded answer whose [n] markers number its citations; "
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
    citations: list[Passage]


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
            section_trail=s.section.split(SECTION_SEPARATOR) if s.section else [],
            link=s.link,
            score=s.score,
            text=s.text,
        )
        for n, s in enumerate(sources, 1)
    ]


def scoped_documents(
    services: Services, collection: str, source_prefix: str | None, documents: list[str] | None
) -> list[str] | None:
    """The documents a search may read: those under the prefix and in the list; None when unscoped."""
    if source_prefix is None:
        return documents
    under = [d.source for d in list_documents(services, collection) if d.source.startswith(source_prefix)]
    return [d for d in under if documents is None or d in documents]


def search_collection(
    services: Services,
    collection: str,
    query: str,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    source_prefix: str | None = None,
    documents: list[str] | None = None,
) -> SearchResult:
    services.registry.get(collection)
    scope = scoped_documents(services, collection, source_prefix, documents)
    found = (
        [] if scope == [] else retrieve(services, collection, query, top_k=top_k, mode=mode, documents=scope)
    )
    return SearchResult(collection=collection, query=query, passages=passages(found))


def read_section(services: Services, collection: str, source: str, section: str) -> Section:
    """Every chunk of one section of one document, in order, from the document's newest version."""
    with live_record(services, collection) as record:
        hits = list(
            services.engine.scroll(record.live_index, Filter(must={"source": source, "section": section}))
        )
    if not hits:
        raise DocumentNotFound(f"collection {collection!r} has no section {section!r} in {source!r}")
    newest = max(hits, key=lambda h: h.payload.get("written_at", 0)).payload["doc_hash"]
    chunks = sorted((h for h in hits if h.payload["doc_hash"] == newest), key=lambda h: h.payload["position"])
    return Section(
        collection=collection,
        source=source,
        section=section,
        section_trail=section.split(SECTION_SEPARATOR) if section else [],
        link=chunks[0].payload.get("link"),
        text="\n\n".join(h.payload.get("text", "") for h in chunks),
    )


T = TypeVar("T")


async def _call(function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """A service function on a worker thread; a ragsvc error becomes the tool's error result."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except RagsvcError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from exc


def build_mcp(services_of: Callable[[], Services]) -> MCPServer:
    """The MCP server over the Services that `services_of` returns when a tool runs."""
    mcp = MCPServer("ragsvc", version=__version__, instructions=INSTRUCTIONS)

    @mcp.tool()
    async def list_collections() -> CollectionList:
        """The collections this server holds: ask or search one by its name."""
        services = services_of()
        records = await _call(services.registry.list)
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
        return await _call(
            search_collection, services_of(), collection, query, top_k, mode, source_prefix, documents
        )

    @mcp.tool()
    async def ask(
        collection: str,
        question: str,
        top_k: Annotated[int | None, Field(ge=1, le=MAX_TOP_K)] = None,
        mode: SearchMode | None = None,
    ) -> CitedAnswer:
        """A grounded answer from the collection's documents; its [n] markers cite the numbered citations."""
        answer = await _call(answer_question, services_of(), collection, question, top_k=top_k, mode=mode)
        return CitedAnswer(
            collection=collection, question=question, answer=answer.answer, citations=passages(answer.sources)
        )

    @mcp.tool(name="read_section")
    async def read_section_tool(collection: str, source: str, section: str) -> Section:
        """The whole text of one section of a document, as cited by search or ask (source and section)."""
        return await _call(read_section, services_of(), collection, source, section)

    return mcp
