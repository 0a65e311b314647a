"""What Open WebUI understands beyond OpenAI's chat API: ragsvc's sources as its own source chips, and its
background tasks (title, tags, follow-ups...) told apart from questions so that they never reach retrieval.

Plain OpenAI clients are untouched: only a request that carries an `X-OpenWebUI-*` header gets chips.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ragsvc.api.openai_protocol import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from ragsvc.llm import chat_message
from ragsvc.metrics import OPENWEBUI_TASKS
from ragsvc.service.retrieval import Source

if TYPE_CHECKING:
    from llama_index.core.llms import ChatMessage

log = logging.getLogger("ragsvc.openwebui")

# Open WebUI sends X-OpenWebUI-User-*, -User-Jwt and -Chat-Id when it forwards its users, and the connection
# header that ragsvc's docs ask for, `X-OpenWebUI-Task: {{TASK}}` (empty for a chat turn, the task's name
# for its own calls). Its default User-Agent is aiohttp's, which says nothing.
HEADER_PREFIX = "x-openwebui-"
TASK_HEADER = "x-openwebui-task"

# Open WebUI's default task prompts, for a connection that does not send the task header: each starts with
# "### Task:" and wraps the conversation in <chat_history> (or the text to complete in <text>).
TASK_PROMPT_START = "### Task:"
TASK_PROMPT_MARKS = ("<chat_history>", "<text>")
TASK_PROMPT_NAMES = (
    ("concise title", "title_generation"),
    ("tags categorizing", "tags_generation"),
    ("messages this user might naturally send next", "follow_up_generation"),
    ("search queries", "query_generation"),
    ("autocompletion system", "autocomplete_generation"),
)


@dataclass(frozen=True)
class OpenWebUICall:
    """Who is calling: Open WebUI or not, and which of its own tasks this call is, if any."""

    from_openwebui: bool
    task: str | None = None


def recognise(headers: Mapping[str, str], body: ChatCompletionRequest) -> OpenWebUICall:
    from_openwebui = any(name.lower().startswith(HEADER_PREFIX) for name in headers)
    task = headers.get(TASK_HEADER, "").strip() or _task_from_prompt(body)
    return OpenWebUICall(from_openwebui=from_openwebui, task=task or None)


def _task_from_prompt(body: ChatCompletionRequest) -> str | None:
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        return None
    text = users[-1].text().lstrip()
    if not text.startswith(TASK_PROMPT_START) or not any(mark in text for mark in TASK_PROMPT_MARKS):
        return None
    lowered = text.lower()
    return next((name for phrase, name in TASK_PROMPT_NAMES if phrase in lowered), "task")


def task_messages(body: ChatCompletionRequest) -> list[ChatMessage]:
    """The conversation of a task call as Open WebUI wrote it (developer messages count as system)."""
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    return [chat_message(roles[m.role], m.text()) for m in body.messages if m.role in roles]


def count_task(task: str, collection: str) -> None:
    """A task call that reached ragsvc and was answered without retrieval: counted and logged."""
    OPENWEBUI_TASKS.labels(task=task).inc()
    log.info("open webui task answered without retrieval", extra={"task": task, "collection": collection})


class SourceRef(BaseModel):
    id: str
    name: str
    url: str | None = None


class SourceMetadata(BaseModel):
    # Open WebUI groups chips by `source`, names them by `name` and links them to `source_url`.
    source: str
    name: str
    source_url: str | None = None
    file: str
    section: str


class SourceChip(BaseModel):
    """One of Open WebUI's sources: the cited section, the text the answer read, a link that opens it."""

    source: SourceRef
    document: list[str]
    metadata: list[SourceMetadata]


class SourceEvent(BaseModel):
    type: str = "source"
    data: SourceChip


class ChunkWithEvent(ChatCompletionChunk):
    """A stream chunk that carries an Open WebUI event beside empty choices."""

    event: SourceEvent


class ResponseWithSources(ChatCompletionResponse):
    """A whole reply with the sources beside it, where Open WebUI's own API puts its RAG sources."""

    sources: list[SourceChip] = Field(default_factory=list)


def source_chips(collection: str, sources: list[Source]) -> list[SourceChip]:
    """Chips in the answer's numbering: chip n is the answer's [n] (each gets its own id, so none merge)."""
    chips = []
    for number, s in enumerate(sources, 1):
        name = f"{s.source} — {s.section}" if s.section else s.source
        chip_id = f"{collection}:{number}:{s.source}"
        chips.append(
            SourceChip(
                source=SourceRef(id=chip_id, name=name, url=s.link),
                document=[s.text],
                metadata=[
                    SourceMetadata(
                        source=chip_id, name=name, source_url=s.link, file=s.source, section=s.section
                    )
                ],
            )
        )
    return chips


def source_event_lines(chunk_id: str, created: int, model: str, sources: list[Source]) -> list[str]:
    """SSE lines, one per source, each an Open WebUI `source` event in a chunk whose choices are empty."""
    return [
        "data: "
        + ChunkWithEvent(
            id=chunk_id, created=created, model=model, choices=[], event=SourceEvent(data=chip)
        ).model_dump_json(exclude_none=True)
        + "\n\n"
        for chip in source_chips(model, sources)
    ]
