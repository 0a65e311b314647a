"""A refusal never comes with a citation block: on every front end its retrieved pages, if any, are "closest
pages", never sources. (The real model's refusals are in tests/test_demo_answers.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi.testclient import TestClient
from mcp import Client

from ragsvc.answer import NOT_COVERED, Answer, Usage, conclude
from ragsvc.api.openai import _replay, _stream, answer_footer
from ragsvc.mcp_server import build_mcp
from ragsvc.service import ingestion
from ragsvc.service.access import LOCAL
from ragsvc.service.retrieval import Source
from ragsvc.service.runtime import Runtime

OPENWEBUI = {"X-OpenWebUI-Chat-Id": "chat-1"}
PAGES = [
    Source(
        source="guides/collections.md",
        section="Managing collections > Deleting a collection",
        score=0.5,
        text="ragsvc collections delete NAME",
        link="http://127.0.0.1:8000/site/guides/collections/#deleting-a-collection",
    ),
    Source(source="reference/cli.rst", section="Command-line reference", score=0.4, text="..."),
]
REFUSAL = Answer(
    answer="The documentation does not cover this.", sources=[], refused=True, closest_pages=PAGES
)


def _chat(question: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "empty", "messages": [{"role": "user", "content": question}], "stream": stream}


def _sse_data(text: str) -> list[dict[str, Any]]:
    lines = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_nothing_retrieved_is_a_refusal_with_no_sources_on_every_front_end(client: TestClient):
    # An empty collection: nothing is retrieved, ragsvc refuses without asking the LLM (which is down here).
    assert client.post("/collections", json={"name": "empty"}).status_code in (200, 201)
    question = {"question": "How do I delete a collection?"}

    rest = client.post("/collections/empty/query", json=question).json()
    assert rest == {**rest, "answer": NOT_COVERED, "sources": [], "refused": True, "closest_pages": []}

    streamed = client.post("/collections/empty/query", json={**question, "stream": True}).text
    assert '"sources": [], "closest_pages": []' in streamed and '"refused": true' in streamed

    v1 = client.post("/v1/chat/completions", json=_chat(question["question"])).json()
    assert v1["choices"][0]["message"]["content"] == NOT_COVERED  # no "Sources:" block, no list
    v1_streamed = client.post("/v1/chat/completions", json=_chat(question["question"], stream=True)).text
    assert "Sources:" not in v1_streamed and NOT_COVERED in v1_streamed

    webui = client.post("/v1/chat/completions", json=_chat(question["question"]), headers=OPENWEBUI).json()
    assert webui["sources"] == [] and webui["choices"][0]["message"]["content"] == NOT_COVERED
    webui_streamed = client.post(
        "/v1/chat/completions", json=_chat(question["question"], stream=True), headers=OPENWEBUI
    ).text
    assert not [d for d in _sse_data(webui_streamed) if "event" in d]  # no source chips


def test_mcp_ask_refuses_with_no_citations(runtime: Runtime):
    ingestion.create_collection(runtime, LOCAL, "empty")
    server = build_mcp(lambda: runtime, lambda _headers: LOCAL)

    async def ask() -> Any:
        async with Client(server, mode="legacy") as mcp:
            return await mcp.call_tool(
                "ask", {"collection": "empty", "question": "How do I delete a collection?"}
            )

    answer = asyncio.run(ask()).structured_content
    assert answer["refused"] is True and answer["citations"] == [] and answer["closest_pages"] == []


def test_a_refusal_shows_the_closest_pages_as_a_list_not_as_sources():
    # The text a plain OpenAI client gets after a refusal: the pages listed, unnumbered, linked, not "Sources".
    footer = answer_footer(REFUSAL)
    assert "Sources:" not in footer and "[1]" not in footer
    assert footer == (
        "\n\nClosest pages:\n"
        "- [guides/collections.md — Managing collections > Deleting a collection]"
        "(http://127.0.0.1:8000/site/guides/collections/#deleting-a-collection)\n"
        "- reference/cli.rst — Command-line reference"
    )
    cited = Answer(answer="Run it [1].", sources=PAGES)
    assert answer_footer(cited).startswith("\n\nSources:\n[1] ")


def _streamed(answer: Answer, chips: bool) -> list[dict[str, Any]]:
    async def collect() -> str:
        return "".join([line async for line in _stream(_replay(answer), "docs", False, chips=chips)])

    return _sse_data(asyncio.run(collect()))


def test_a_streamed_refusal_ends_with_the_closest_pages_and_open_webui_gets_no_chips():
    for chips in (False, True):
        chunks = _streamed(REFUSAL, chips)
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
        assert text.startswith(REFUSAL.answer) and "\n\nClosest pages:\n- [guides/collections.md" in text
        assert "Sources:" not in text and not [c for c in chunks if "event" in c]
    # An answer that cites its sources still gets them: chips for Open WebUI, a block for others.
    cited = Answer(answer="Run it [1].", sources=PAGES)
    assert len([c for c in _streamed(cited, True) if "event" in c]) == 2
    assert any(
        "Sources:" in (c["choices"][0]["delta"].get("content") or "")
        for c in _streamed(cited, False)
        if c.get("choices")
    )


def test_a_sources_list_the_model_wrote_itself_is_dropped(collection_with_docs: Runtime):
    # Qwen2.5-Coder sometimes ends with its own "Sources:" list; ragsvc lists the sources itself.
    said = "Run `ragsvc ingest` on the folder again [1].\n\nSources:\n[1] Ingesting documents (guides/x.md)"
    answer = conclude(collection_with_docs, "docs", said, PAGES, Usage())
    assert answer.answer == "Run `ragsvc ingest` on the folder again [1]." and answer.sources == PAGES
