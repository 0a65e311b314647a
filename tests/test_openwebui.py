"""What ragsvc sends Open WebUI: its sources as Open WebUI's own source events, and its task calls answered
without retrieval. Open WebUI itself is driven in test_openwebui_live.py; here its requests are sent as it
sends them (headers from its connection settings, its default task prompt)."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

QUESTION = "How many dimensions do the embedding vectors have?"
GOLD = "concepts/embedding-models.md"
# What Open WebUI sends with the connection headers ragsvc's docs ask for, on a chat turn (no task).
OPENWEBUI = {"X-OpenWebUI-Task": "", "X-OpenWebUI-Chat-Id": "chat-1"}
# Open WebUI 0.12's default title prompt, as it fills it in (config.py DEFAULT_TITLE_GENERATION_PROMPT_TEMPLATE).
TITLE_PROMPT = """### Task:
Generate a concise title summarizing the chat history.
### Guidelines:
- Keep it short: 2-4 words is best.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: How many dimensions do the embedding vectors have?
ASSISTANT: They have 384 dimensions [1].
</chat_history>"""


def metric(base_url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base_url}/metrics").text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def sse_chunks(response: httpx.Response) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.slow
def test_openwebui_stream_carries_source_events_instead_of_the_markdown_block(shared_assistant: str):
    body = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with httpx.stream(
        "POST", f"{shared_assistant}/v1/chat/completions", json=body, headers=OPENWEBUI, timeout=300
    ) as response:
        assert response.status_code == 200
        chunks = sse_chunks(response)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    events = [c["event"] for c in chunks if "event" in c]
    # What SmolLM2 writes varies with the prompt; the sources are what this test is about.
    assert text.strip() and "Sources:" not in text  # the chips replace the block
    assert events and all(e["type"] == "source" for e in events)
    first = events[0]["data"]
    assert first["metadata"][0]["file"] == GOLD and first["source"]["name"].startswith(GOLD)
    assert "384" in first["document"][0]  # the cited text, shown when the chip is opened
    ids = [e["data"]["metadata"][0]["source"] for e in events]
    assert len(set(ids)) == len(ids)  # one chip per [n]: none merge, so the numbering holds
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.slow
def test_openwebui_whole_reply_has_sources_beside_it_and_openai_client_still_parses_it(shared_assistant: str):
    client = openai.OpenAI(
        base_url=f"{shared_assistant}/v1", api_key="unused", max_retries=0, default_headers=OPENWEBUI
    )
    completion = client.chat.completions.create(
        model="docs", messages=[{"role": "user", "content": QUESTION}]
    )
    content = completion.choices[0].message.content
    assert content.strip() and "Sources:" not in content
    sources = completion.model_extra["sources"]
    assert sources[0]["metadata"][0]["file"] == GOLD and "384" in sources[0]["document"][0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "headers", [{"X-OpenWebUI-Task": "title_generation"}, {}], ids=["task-header", "task-prompt"]
)
def test_openwebui_title_call_goes_to_the_llm_without_retrieval(shared_assistant: str, headers: dict):
    retrievals = metric(shared_assistant, "ragsvc_retrieval_seconds_count")
    titles = metric(shared_assistant, "ragsvc_openwebui_tasks_total", '{task="title_generation"}')
    body = {"model": "docs", "messages": [{"role": "user", "content": TITLE_PROMPT}], "stream": False}
    response = httpx.post(f"{shared_assistant}/v1/chat/completions", json=body, headers=headers, timeout=300)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["choices"][0]["message"]["content"].strip()
    assert "Sources:" not in reply["choices"][0]["message"]["content"] and not reply.get("sources")
    assert metric(shared_assistant, "ragsvc_retrieval_seconds_count") == retrievals
    assert metric(shared_assistant, "ragsvc_openwebui_tasks_total", '{task="title_generation"}') == titles + 1
