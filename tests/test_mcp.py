"""The MCP server, driven by the official SDK's client over streamable HTTP (/mcp) and over stdio (`ragsvc mcp`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from ragsvc.mcp_server import build_mcp
from ragsvc.service.access import Grant, Principal, Right
from ragsvc.service.runtime import Runtime
from tests.conftest import RAGSVC, SAMPLE_DOCS, run_cli

QUESTION = "How many dimensions do the embedding vectors have?"
GOLD = "concepts/embedding-models.md"
TOOLS = {"list_collections", "search", "ask", "read_section"}

Session = Callable[[Callable[[Client], Awaitable[Any]]], Any]


def over_http(url: str, headers: dict[str, str] | None = None) -> Session:
    """Run `steps` in one MCP session with the server at url/mcp, as a deployed client does (handshake)."""

    async def session(steps: Callable[[Client], Awaitable[Any]]) -> Any:
        async with httpx2.AsyncClient(headers=headers or {}, timeout=300) as http:
            transport = streamable_http_client(f"{url}/mcp", http_client=http)
            async with Client(transport, mode="legacy") as client:
                return await steps(client)

    return lambda steps: asyncio.run(session(steps))


def over_stdio(env: dict[str, str]) -> Session:
    """Run `steps` in one MCP session with `ragsvc mcp`, started as Claude Desktop starts it."""

    async def session(steps: Callable[[Client], Awaitable[Any]]) -> Any:
        server = StdioServerParameters(command=RAGSVC, args=["mcp"], env={**os.environ, **env})
        async with Client(server, mode="legacy", read_timeout_seconds=300) as client:
            return await steps(client)

    return lambda steps: asyncio.run(session(steps))


async def search_scoped_read_and_fail(client: Client) -> dict[str, Any]:
    """What every transport must do alike: list tools and collections, search (whole, scoped by prefix and by
    document list), read a cited section, and get an error result for a missing collection, then carry on."""
    tools = {t.name for t in (await client.list_tools()).tools}
    collections = await client.call_tool("list_collections", {})
    found = await client.call_tool("search", {"collection": "docs", "query": QUESTION, "top_k": 3})
    guides = await client.call_tool(
        "search", {"collection": "docs", "query": QUESTION, "top_k": 3, "source_prefix": "guides/"}
    )
    listed = await client.call_tool(
        "search", {"collection": "docs", "query": QUESTION, "documents": ["guides/collections.md"]}
    )
    best = found.structured_content["passages"][0]
    section = await client.call_tool(
        "read_section", {"collection": "docs", "source": best["source"], "section": best["section"]}
    )
    missing = await client.call_tool("search", {"collection": "nope", "query": QUESTION})
    after_error = await client.call_tool("list_collections", {})
    return {
        "tools": tools,
        "collections": collections,
        "found": found,
        "guides": guides,
        "listed": listed,
        "best": best,
        "section": section,
        "missing": missing,
        "after_error": after_error,
    }


def assert_searched_scoped_read_and_failed(outcome: dict[str, Any]) -> None:
    assert TOOLS <= outcome["tools"]
    assert [c["name"] for c in outcome["collections"].structured_content["collections"]] == ["docs"]
    best = outcome["best"]
    assert not outcome["found"].is_error
    assert best["source"] == GOLD and "384" in best["text"]
    assert best["section_trail"] == best["section"].split(" > ") and best["number"] == 1
    assert {p["source"] for p in outcome["guides"].structured_content["passages"]} <= {
        p for p in _doc_paths() if p.startswith("guides/")
    }
    assert outcome["guides"].structured_content["passages"]
    assert {p["source"] for p in outcome["listed"].structured_content["passages"]} == {
        "guides/collections.md"
    }
    section = outcome["section"].structured_content
    assert not outcome["section"].is_error
    assert section["source"] == GOLD and best["text"][:80] in section["text"]
    missing = outcome["missing"]
    assert missing.is_error  # a result the model can read, not a protocol error or a dropped session
    assert "collection_not_found" in missing.content[0].text and "'nope'" in missing.content[0].text
    assert not outcome["after_error"].is_error


def _doc_paths() -> set[str]:
    return {p.relative_to(SAMPLE_DOCS).as_posix() for p in SAMPLE_DOCS.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_mcp_over_http_searches_scopes_reads_and_reports_errors_as_results(shared_assistant: str):
    assert_searched_scoped_read_and_failed(over_http(shared_assistant)(search_scoped_read_and_fail))


@pytest.mark.slow
def test_mcp_over_http_asks_a_collection_for_a_cited_answer(shared_assistant: str):
    async def ask(client: Client) -> Any:
        return await client.call_tool("ask", {"collection": "docs", "question": QUESTION})

    result = over_http(shared_assistant)(ask)
    assert not result.is_error
    answer = result.structured_content
    assert answer["answer"].strip()  # SmolLM2's wording varies; the citations are the contract
    # SmolLM2 may refuse: then the same passage comes as the first closest page
    cited = (answer["citations"] or answer["closest_pages"])[0]
    assert cited["number"] == 1 and cited["source"] == GOLD and cited["text"]


@pytest.mark.slow
def test_mcp_over_stdio_searches_asks_and_reports_errors_as_results(data_dir: Path, running_llm: str):
    ingested = run_cli("ingest", str(SAMPLE_DOCS), "--collection", "docs")
    assert ingested.returncode == 0, ingested.stderr

    async def everything(client: Client) -> dict[str, Any]:
        outcome = await search_scoped_read_and_fail(client)
        outcome["ask"] = await client.call_tool("ask", {"collection": "docs", "question": QUESTION})
        return outcome

    outcome = over_stdio({"RAGSVC_DATA_DIR": str(data_dir), "RAGSVC_LLM_BASE_URL": running_llm})(everything)
    assert_searched_scoped_read_and_failed(outcome)
    answer = outcome["ask"].structured_content
    assert answer["answer"].strip() and (answer["citations"] or answer["closest_pages"])[0]["source"] == GOLD


@pytest.mark.slow
def test_mcp_stdio_refuses_a_data_dir_a_server_owns_and_names_its_url(running_server: str):
    result = run_cli("mcp", timeout=60)
    assert result.returncode == 1
    assert f"{running_server}/mcp" in result.stderr


def test_a_collection_the_caller_may_not_read_answers_as_a_missing_one(collection_with_docs: Runtime):
    # Two callers on one server: one may read 'docs', the other holds no right on it (issue 20 maps keys to
    # such principals; here the principal is given directly, through the same hook /mcp uses).
    reader = Principal(user="reader", grants=(Grant(collection="docs", right=Right.read),))
    stranger = Principal(user="stranger", grants=(Grant(collection="other", right=Right.read),))
    calling: list[Principal] = []
    server = build_mcp(lambda: collection_with_docs, lambda _headers: calling[-1])

    async def calls(caller: Principal) -> dict[str, Any]:
        calling.append(caller)
        async with Client(server, mode="legacy") as client:
            return {
                "listed": await client.call_tool("list_collections", {}),
                "docs": await client.call_tool("search", {"collection": "docs", "query": QUESTION}),
                "nope": await client.call_tool("search", {"collection": "nope", "query": QUESTION}),
                "section": await client.call_tool(
                    "read_section", {"collection": "docs", "source": GOLD, "section": "x"}
                ),
            }

    mine, theirs = asyncio.run(calls(reader)), asyncio.run(calls(stranger))
    assert [c["name"] for c in mine["listed"].structured_content["collections"]] == ["docs"]
    assert mine["docs"].structured_content["passages"][0]["source"] == GOLD
    assert theirs["listed"].structured_content["collections"] == []
    assert theirs["docs"].is_error and theirs["nope"].is_error
    # The same words as for a collection that does not exist, with only the name differing.
    assert theirs["docs"].content[0].text == theirs["nope"].content[0].text.replace("'nope'", "'docs'")
    assert (
        theirs["section"].content[0].text.split(": ", 1)[1]
        == theirs["docs"].content[0].text.split(": ", 1)[1]
    )
