"""Grounded answers from a collection, whole or streamed: the entry points over the answer pipeline
(ragsvc.answer), each checking the caller's right to read the collection first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from indexes.engine import SearchMode
from ragsvc.answer import (
    Answer,
    Prompt,
    StreamEvent,
    Turn,
    answer_prompt,
    prepare,
    reply_without_retrieval,
    stream_answer,
)
from ragsvc.service.access import Principal, Right, require
from ragsvc.service.runtime import Runtime

if TYPE_CHECKING:
    from llama_index.core.llms import ChatMessage


def _prepared(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    question: str,
    *,
    history: list[Turn] | None,
    top_k: int | None,
    mode: SearchMode | None,
    instructions: str | None,
    max_tokens: int | None,
) -> Prompt:
    require(caller, collection, Right.read)
    runtime.registry.get(collection)  # an unknown collection is its error before any LLM call
    prompt = prepare(
        runtime, collection, question, history=history, top_k=top_k, mode=mode, instructions=instructions
    )
    if max_tokens:
        prompt.max_tokens = min(prompt.max_tokens, max_tokens)
    return prompt


def ask(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    question: str,
    *,
    history: list[Turn] | None = None,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    instructions: str | None = None,
    max_tokens: int | None = None,
) -> Answer:
    """The LLM's answer from the collection's best chunks, citing them; `history` holds earlier turns."""
    prompt = _prepared(
        runtime,
        caller,
        collection,
        question,
        history=history,
        top_k=top_k,
        mode=mode,
        instructions=instructions,
        max_tokens=max_tokens,
    )
    return answer_prompt(runtime, collection, prompt)


@dataclass
class AnswerStream:
    """An answer being streamed: retrieval and the prompt are done (their errors were raised before any
    byte was sent); `events` yields the LLM's tokens, then one end event with the cited answer."""

    runtime: Runtime
    collection: str
    prompt: Prompt

    def events(self) -> AsyncIterator[StreamEvent]:
        return stream_answer(self.runtime, self.collection, self.prompt)


def start_stream(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    question: str,
    *,
    history: list[Turn] | None = None,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    instructions: str | None = None,
    max_tokens: int | None = None,
) -> AnswerStream:
    """Prepare an answer to stream: everything but the LLM's reply, which `AnswerStream.events` yields."""
    prompt = _prepared(
        runtime,
        caller,
        collection,
        question,
        history=history,
        top_k=top_k,
        mode=mode,
        instructions=instructions,
        max_tokens=max_tokens,
    )
    return AnswerStream(runtime, collection, prompt)


def reply_to_task(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    messages: list[ChatMessage],
    *,
    max_tokens: int | None = None,
) -> Answer:
    """A chat UI's own call made on the collection's model (a title, tags, follow-ups): the LLM replies to the
    conversation as sent, with no retrieval. The caller needs the same right as for asking."""
    require(caller, collection, Right.read)
    runtime.registry.get(collection)
    return reply_without_retrieval(runtime, collection, messages, max_tokens)
