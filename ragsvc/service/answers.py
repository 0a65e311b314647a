"""Grounded answers from a collection, whole or streamed: the entry points over the answer pipeline
(ragsvc.answer), each checking the caller's right to read the collection first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
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
from ragsvc.service.metering import Meter, Spent, charged, llm_charge
from ragsvc.service.retrieval import question_charge
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
    mode = mode or runtime.settings.search_mode
    # The request is admitted before any model runs; each LLM call is admitted again before it runs.
    with question_charge(runtime, caller, collection, question, mode):
        prompt = prepare(
            runtime,
            collection,
            question,
            history=history,
            top_k=top_k,
            mode=mode,
            instructions=instructions,
            charge=llm_charge(runtime, caller, collection),
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
    return ask_checked(
        runtime,
        caller,
        collection,
        question,
        history=history,
        top_k=top_k,
        mode=mode,
        instructions=instructions,
        max_tokens=max_tokens,
    )[0]


def ask_checked(
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
) -> tuple[Answer, float | None]:
    """`ask`, and the answer check's P(yes) where it ran (for the evaluation runner, which reports what the
    check would refuse at other bars)."""
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
    answer = answer_prompt(runtime, collection, prompt, llm_charge(runtime, caller, collection))
    return answer, prompt.supported


@dataclass
class AnswerStream:
    """An answer being streamed: retrieval and the prompt are done and the LLM call is admitted (their
    errors were raised before any byte was sent); `events` yields the LLM's tokens, then one end event with
    the cited answer, and settles the call to the usage the LLM reported."""

    runtime: Runtime
    collection: str
    prompt: Prompt
    charge: AbstractContextManager[Meter | Spent] | None = None
    meter: Meter | Spent | None = None

    async def events(self) -> AsyncIterator[StreamEvent]:
        failure: BaseException | None = None
        try:
            async for event in stream_answer(self.runtime, self.collection, self.prompt):
                if event.answer is not None and self.meter is not None:
                    self.meter.input_tokens = event.answer.usage.prompt_tokens or None
                    self.meter.output_tokens = event.answer.usage.completion_tokens or None
                yield event
        except BaseException as exc:  # the LLM failed, or the client went away: charged what it got
            failure = exc
            raise
        finally:
            if self.charge is not None:
                if failure is None:
                    self.charge.__exit__(None, None, None)
                else:
                    self.charge.__exit__(type(failure), failure, failure.__traceback__)


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
    if not prompt.sources or prompt.unsupported:  # answered without the LLM
        return AnswerStream(runtime, collection, prompt)
    charge = charged(
        runtime,
        caller,
        collection,
        runtime.settings.llm_model,
        input_tokens=prompt.input_tokens,
        output_tokens=prompt.max_tokens,
        requests=0,
    )
    meter = charge.__enter__()  # OverLimit here is the request's error, before any byte is sent
    return AnswerStream(runtime, collection, prompt, charge, meter)


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
    charge = llm_charge(runtime, caller, collection, requests=1)
    return reply_without_retrieval(runtime, collection, messages, max_tokens, charge)
