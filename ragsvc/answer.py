"""Grounded answers: the retrieved chunks become numbered sources and the LLM answers only from them.

The prompt is fitted to the LLM's context window in the server's own tokens: the reserved answer, the system
prompt and the question first, then sources best first, then history newest first. A follow-up question is
condensed into a standalone one before retrieval. The reply is read through a guard that ends it at its first
repeated sentence; a refusal (or a reply that cites nothing) comes with the retrieved pages as closest pages,
never as its sources.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from eval.metrics import is_refusal
from indexes.engine import SearchMode
from indexes.errors import RagsvcError
from ragsvc.answer_check import below_bar, check_support
from ragsvc.answer_guard import RepetitionGuard
from ragsvc.citations import CITATION, attribute_citations
from ragsvc.llm import Delta, Reply, chat_message
from ragsvc.metrics import PRE_LLM_SECONDS
from ragsvc.service.embeddings import embedder_for
from ragsvc.service.metering import LLMCharge, free
from ragsvc.service.retrieval import Source, retrieve
from ragsvc.service.runtime import Runtime

if TYPE_CHECKING:
    from llama_index.core.llms import ChatMessage

# Rewrites tried with Qwen2.5-Coder-1.5B did not keep (README); refusing is the answer check's job (answer_check).
SYSTEM_PROMPT = (
    "You are a documentation assistant. Answer the question using only the numbered sources. "
    "After each fact, cite the source it comes from as [1], [2] and so on. "
    "{refusal}Be brief."
)
# Only where the answer check is off: after a passed check the rule made the model refuse answerable questions on
# its own (16 of 190 on four blind sets) and caught no uncovered one (README).
REFUSAL_RULE = "If the sources do not answer the question, say that the documentation does not cover it. "
CONDENSE_PROMPT = (
    "Rewrite the follow-up question as one standalone question that can be understood without the "
    "conversation. Reply with the question only.\n\nConversation:\n{history}\n\nFollow-up question: {question}"
    "\nStandalone question:"
)
NOT_COVERED = "The documentation does not cover this: nothing relevant was found."
NOT_ANSWERED = "The documentation does not cover this: the closest pages do not answer it."
ANSWER_CUE = "\nAnswer (cite sources as [n]):"
# Chat templates add a few tokens around every message; the margin absorbs tokenizer differences.
TOKENS_PER_MESSAGE = 8
SAFETY_MARGIN = 16
MIN_ANSWER_TOKENS = 48
_OWN_SOURCES = re.compile(r"\n\s*(?:#+\s*)?\**(?:Sources|References)\**:?\**\s*\n\s*(?:[-*]\s*)?\[?\d+[\].]")


class PromptTooLong(RagsvcError):
    code = "prompt_too_long"


class Turn(BaseModel, strict=True):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=100_000)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Answer(BaseModel):
    answer: str
    sources: list[Source] = Field(description="what the answer's [n] markers cite, numbered from 1")
    refused: bool = Field(
        False, description="the documentation does not answer the question (the answer says so)"
    )
    closest_pages: list[Source] = Field(
        default_factory=list,
        description="the retrieved pages, when the answer cites none of them (a refusal): nearest to the "
        "question, but not sources of the answer",
    )
    usage: Usage = Field(default_factory=Usage)
    truncated: bool = Field(
        False, description="the answer stopped at its token limit (max_tokens), unfinished"
    )


@dataclass
class Prompt:
    messages: list[ChatMessage]
    sources: list[Source]
    max_tokens: int
    input_tokens: int = 0  # as counted by the LLM's tokenizer, with each message's overhead
    # perf_counter when preparing began: the LLM call observes ragsvc's own share up to that call
    started: float | None = None
    supported: float | None = None  # the answer check's P(yes) that the sources answer it, when it ran
    unsupported: bool = False  # the check found they do not: ragsvc refuses without asking for an answer


def format_source(number: int, source: Source) -> str:
    return f"[{number}] {source.section} ({source.source})\n{source.text}"


def fit_prompt(
    count: Callable[[list[str]], list[int]],
    *,
    system: str,
    question: str,
    sources: list[Source],
    history: list[Turn],
    context_window: int,
    max_tokens: int,
) -> Prompt:
    """The largest prompt that leaves room for the answer; least relevant sources and oldest turns go first.

    Usually everything fits: then the prompt as it will be sent is counted in one call (a single tokenizer
    round trip for the new text), and sources are counted one by one only when some must be dropped.
    """
    header = "Sources:\n\n"
    footer = f"\n\nQuestion: {question}{ANSWER_CUE}"
    whole = _assemble(system, header, footer, sources, history)
    counts = count([m.content or "" for m in whole])
    needed = (
        sum(counts) + len(whole) * TOKENS_PER_MESSAGE + SAFETY_MARGIN + max(max_tokens, MIN_ANSWER_TOKENS)
    )
    if needed <= context_window:
        input_tokens = sum(counts) + len(whole) * TOKENS_PER_MESSAGE
        return Prompt(whole, sources, max(max_tokens, MIN_ANSWER_TOKENS), input_tokens)

    blocks = [format_source(i, s) for i, s in enumerate(sources, 1)]
    counts = count([system, header + footer, *blocks, *(t.content for t in history)])
    system_tokens, frame_tokens = counts[0], counts[1]
    block_tokens = counts[2 : 2 + len(blocks)]
    turn_tokens = counts[2 + len(blocks) :]

    fixed = system_tokens + frame_tokens + 2 * TOKENS_PER_MESSAGE + SAFETY_MARGIN
    if fixed + MIN_ANSWER_TOKENS > context_window:
        raise PromptTooLong(
            f"the question is too long for the LLM's context window of {context_window} tokens "
            f"({fixed} tokens before any source)"
        )
    answer_tokens = max(MIN_ANSWER_TOKENS, min(max_tokens, context_window - fixed))
    room = context_window - fixed - answer_tokens

    kept: list[Source] = []
    for source, tokens in zip(sources, block_tokens, strict=True):
        if tokens + 1 <= room:
            kept.append(source)
            room -= tokens + 1
    if not kept and sources and room > 32:
        # Not even the best source fits whole: keep its beginning rather than nothing.
        best = sources[0]
        share = room / max(block_tokens[0], 1)
        kept = [best.model_copy(update={"text": best.text[: int(len(best.text) * share * 0.9)]})]
        room = 0

    turns: list[Turn] = []
    for turn, tokens in zip(reversed(history), reversed(turn_tokens), strict=True):
        if tokens + TOKENS_PER_MESSAGE > room:
            break
        turns.insert(0, turn)
        room -= tokens + TOKENS_PER_MESSAGE

    # What it will hold, as counted: the room left is what was not used of the context window.
    input_tokens = context_window - answer_tokens - room
    return Prompt(_assemble(system, header, footer, kept, turns), kept, answer_tokens, input_tokens)


def _assemble(
    system: str, header: str, footer: str, sources: list[Source], turns: list[Turn]
) -> list[ChatMessage]:
    body = "\n\n".join(format_source(i, s) for i, s in enumerate(sources, 1))
    messages = [chat_message("system", system)]
    messages += [chat_message(t.role, t.content) for t in turns]
    messages.append(chat_message("user", header + body + footer))
    return messages


def condense_question(runtime: Runtime, question: str, history: list[Turn], charge: LLMCharge = free) -> str:
    """A follow-up made standalone for retrieval; the question itself when there is no earlier user turn."""
    if not any(t.role == "user" for t in history):
        return question
    llm = runtime.llm
    reply_tokens = 64
    budget = llm.context_window - reply_tokens - TOKENS_PER_MESSAGE - SAFETY_MARGIN
    budget -= llm.count_tokens([CONDENSE_PROMPT.format(history="", question=question)])[0]
    lines: list[str] = []
    turns = [f"{t.role}: {t.content[:1000]}" for t in history[-6:]]
    for line, tokens in zip(reversed(turns), reversed(llm.count_tokens(turns)), strict=True):
        if tokens + 1 > budget:
            break
        lines.insert(0, line)
        budget -= tokens + 1
    if not lines:
        return question  # no room for any history: retrieve with the question as asked
    content = CONDENSE_PROMPT.format(history="\n".join(lines), question=question)
    used = llm.context_window - reply_tokens - SAFETY_MARGIN - budget
    with charge(used, reply_tokens) as meter:
        reply = llm.chat([chat_message("user", content)], max_tokens=reply_tokens)
        meter.input_tokens, meter.output_tokens = reply.prompt_tokens, reply.completion_tokens
    standalone = reply.text.strip().strip('"').splitlines()[0] if reply.text.strip() else ""
    # A weak model may ramble or answer instead: keep the user's own words then.
    if not standalone or len(standalone) > 3 * len(question) + 200:
        return question
    return standalone


def prepare(
    runtime: Runtime,
    collection: str,
    question: str,
    *,
    history: list[Turn] | None = None,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    instructions: str | None = None,
    charge: LLMCharge = free,
) -> Prompt:
    started = time.perf_counter()
    history = history or []
    search_query = condense_question(runtime, question, history, charge)
    sources = retrieve(
        runtime,
        collection,
        search_query,
        top_k=top_k,
        mode=mode,
        per_source=runtime.settings.answer_chunks_per_source,
    )
    llm = runtime.llm
    checked = runtime.settings.answer_check_threshold > 0
    system = SYSTEM_PROMPT.format(refusal="" if checked else REFUSAL_RULE)
    system += f"\n\nAdditional instructions:\n{instructions}" if instructions else ""
    prompt = fit_prompt(
        llm.count_tokens,
        system=system,
        question=question,
        sources=sources,
        history=history,
        context_window=llm.context_window,
        max_tokens=llm.max_tokens,
    )
    prompt.started = started
    if checked and prompt.sources:
        prompt.supported = check_support(runtime, prompt.messages, ANSWER_CUE, prompt.input_tokens, charge)
        prompt.unsupported = below_bar(runtime, collection, question, prompt.supported)
    return prompt


def _not_answered(prompt: Prompt) -> Answer:  # the answer check's refusal: no answer was asked for
    return Answer(answer=NOT_ANSWERED, sources=[], refused=True, closest_pages=prompt.sources)


def observe_pre_llm(prompt: Prompt) -> None:
    """ragsvc's own time from the start of preparing to the answer's LLM call (ragsvc_pre_llm_seconds)."""
    if prompt.started is not None:
        PRE_LLM_SECONDS.observe(time.perf_counter() - prompt.started)


def conclude(
    runtime: Runtime,
    collection: str,
    text: str,
    sources: list[Source],
    usage: Usage,
    *,
    truncated: bool = False,
) -> Answer:
    """The answer as users get it: cited sentences and its sources, or a refusal with the closest pages."""
    # A list of sources the model wrote itself ends the answer: ragsvc lists the sources.
    text = _OWN_SOURCES.split(text, maxsplit=1)[0].strip()
    if not text or is_refusal(text):
        said = " ".join(CITATION.sub("", text).split()) or NOT_COVERED
        return Answer(answer=said, sources=[], refused=True, closest_pages=sources, usage=usage)
    embedder = embedder_for(runtime, runtime.registry.get(collection))
    text = attribute_citations(text, sources, embedder.embed_documents)
    if not CITATION.search(text):
        # An answer that cites nothing lists no sources: the pages were retrieved, not used.
        return Answer(answer=text, sources=[], closest_pages=sources, usage=usage, truncated=truncated)
    return Answer(answer=text, sources=sources, usage=usage, truncated=truncated)


def _read(reply: Reply, delta: Delta) -> None:
    reply.prompt_tokens = delta.prompt_tokens or reply.prompt_tokens
    reply.completion_tokens = delta.completion_tokens or reply.completion_tokens
    reply.finish_reason = delta.finish_reason or reply.finish_reason
    if delta.text:
        reply.pieces += 1


def _cut_usage(runtime: Runtime, prompt: Prompt, reply: Reply) -> Usage:
    """The usage of a reply, also of one cut before the LLM reported it: the prompt as counted by the LLM's
    tokenizer (counted already while fitting it), one token per streamed piece."""
    if reply.completion_tokens is None:
        reply.completion_tokens = reply.pieces
        counts = runtime.llm.count_tokens([m.content or "" for m in prompt.messages])
        reply.prompt_tokens = sum(counts) + len(counts) * TOKENS_PER_MESSAGE
    return usage_of(reply)


def _truncated(reply: Reply, guard: RepetitionGuard) -> bool:  # at max_tokens, not cut for repeating itself
    return reply.finish_reason == "length" and not guard.stopped


def usage_of(reply: Reply) -> Usage:
    prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def answer_question(
    runtime: Runtime,
    collection: str,
    question: str,
    *,
    history: list[Turn] | None = None,
    top_k: int | None = None,
    mode: SearchMode | None = None,
    instructions: str | None = None,
) -> Answer:
    prompt = prepare(
        runtime, collection, question, history=history, top_k=top_k, mode=mode, instructions=instructions
    )
    return answer_prompt(runtime, collection, prompt)


def answer_prompt(runtime: Runtime, collection: str, prompt: Prompt, charge: LLMCharge = free) -> Answer:
    """The LLM's reply to a prepared prompt, with citations; no LLM call when nothing was retrieved. The reply
    is read as it comes, and the LLM stops where the guard cuts it."""
    if not prompt.sources:
        return Answer(answer=NOT_COVERED, sources=[], refused=True)
    if prompt.unsupported:
        return _not_answered(prompt)
    observe_pre_llm(prompt)
    guard = RepetitionGuard()
    reply = Reply("")
    with charge(prompt.input_tokens, prompt.max_tokens) as meter:
        deltas = runtime.llm.stream_chat(prompt.messages, max_tokens=prompt.max_tokens)
        try:
            for delta in deltas:
                guard.feed(delta.text)
                _read(reply, delta)
                if guard.stopped:
                    break
        finally:
            deltas.close()  # a cut reply: closing the request stops the LLM generating the rest
        # A cut reply has no usage from the LLM: it is counted here, and charged as counted.
        usage = _cut_usage(runtime, prompt, reply)
        meter.input_tokens, meter.output_tokens = usage.prompt_tokens, usage.completion_tokens
    guard.close()
    return conclude(
        runtime, collection, guard.text, prompt.sources, usage, truncated=_truncated(reply, guard)
    )


def reply_without_retrieval(
    runtime: Runtime,
    collection: str,
    messages: list[ChatMessage],
    max_tokens: int | None = None,
    charge: LLMCharge = free,
) -> Answer:
    """The LLM's reply to a conversation as it stands, no sources: for a chat UI's own calls about the chat
    (a title, tags), which a search of the collection cannot help."""
    llm = runtime.llm
    counts = llm.count_tokens([m.content or "" for m in messages])
    answer_tokens = min(max_tokens or llm.max_tokens, llm.max_tokens)
    needed = sum(counts) + len(messages) * TOKENS_PER_MESSAGE + SAFETY_MARGIN + answer_tokens
    if needed > llm.context_window:
        raise PromptTooLong(
            f"the request is too long for the LLM's context window of {llm.context_window} tokens "
            f"({needed - answer_tokens} tokens)"
        )
    with charge(needed - answer_tokens - SAFETY_MARGIN, answer_tokens) as meter:
        reply = llm.chat(messages, max_tokens=answer_tokens)
        meter.input_tokens, meter.output_tokens = reply.prompt_tokens, reply.completion_tokens
    return Answer(
        answer=reply.text, sources=[], usage=usage_of(reply), truncated=reply.finish_reason == "length"
    )


@dataclass
class StreamEvent:
    kind: Literal["token", "end"]
    text: str = ""
    answer: Answer | None = None


async def stream_answer(runtime: Runtime, collection: str, prompt: Prompt) -> AsyncIterator[StreamEvent]:
    """Answer tokens as the LLM sends them, then one end event with the cited answer and usage."""
    if not prompt.sources:
        yield StreamEvent("token", NOT_COVERED)
        yield StreamEvent("end", answer=Answer(answer=NOT_COVERED, sources=[], refused=True))
        return
    if prompt.unsupported:
        yield StreamEvent("token", NOT_ANSWERED)
        yield StreamEvent("end", answer=_not_answered(prompt))
        return
    guard = RepetitionGuard()
    reply = Reply("")
    observe_pre_llm(prompt)
    deltas = runtime.llm.stream(prompt.messages, max_tokens=prompt.max_tokens)
    try:
        async for delta in deltas:
            if shown := guard.feed(delta.text):
                yield StreamEvent("token", shown)
            _read(reply, delta)
            if guard.stopped:
                break
    except RagsvcError:
        # The LLM broke off: what the guard held back is shown before the error, as the LLM said it.
        if rest := guard.close():
            yield StreamEvent("token", rest)
        raise
    finally:
        await deltas.aclose()  # a cut reply: closing the request stops the LLM generating the rest
    if rest := guard.close():
        yield StreamEvent("token", rest)
    usage = _cut_usage(runtime, prompt, reply)
    answer = conclude(
        runtime, collection, guard.text, prompt.sources, usage, truncated=_truncated(reply, guard)
    )
    yield StreamEvent("end", answer=answer)
