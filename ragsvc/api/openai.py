"""The OpenAI-compatible surface: each collection is an "assistant" model answering with RAG over it, and
`/v1/embeddings` serves the local embedding model to other services.

Chat UIs (Open WebUI), editors (Continue) and the openai / llama-index clients use it unchanged.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from indexes.errors import InvalidRequest, RagsvcError
from ragsvc.answer import Answer, StreamEvent, Turn
from ragsvc.api.deps import PrincipalDep, RuntimeDep
from ragsvc.api.errors import AUTH_ERRORS, error_body, errors
from ragsvc.api.openai_protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    Choice,
    DeltaMessage,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    StreamChoice,
    UsageInfo,
    completion_id,
)
from ragsvc.api.openwebui import (
    ResponseWithSources,
    count_task,
    recognise,
    source_chips,
    source_event_lines,
    task_messages,
)
from ragsvc.service import answers, collections, embeddings
from ragsvc.service.embeddings import EmbeddedTexts
from ragsvc.service.retrieval import Source

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors(*AUTH_ERRORS, 404, 422, 503))


def _label(source: Source) -> str:
    label = f"{source.source} — {source.section}" if source.section else source.source
    return f"[{label}]({source.link})" if source.link else label


def citation_block(sources: list[Source]) -> str:
    """Markdown links to the cited sections, numbered as in the answer."""
    if not sources:
        return ""
    lines = [f"[{i}] {_label(s)}" for i, s in enumerate(sources, 1)]
    return "\n\nSources:\n" + "\n".join(lines)


def closest_pages_block(pages: list[Source]) -> str:
    """The retrieved pages of an answer that cites none (a refusal): a list to look at, not citations."""
    if not pages:
        return ""
    return "\n\nClosest pages:\n" + "\n".join(f"- {_label(s)}" for s in pages)


def answer_footer(answer: Answer) -> str:
    """What follows an answer's text for a client that shows only text: its sources, or the closest pages."""
    return citation_block(answer.sources) or closest_pages_block(answer.closest_pages)


def _conversation(body: ChatCompletionRequest) -> tuple[str, list[Turn], str | None]:
    """The last user message is the question; earlier turns are history; system messages are instructions."""
    instructions = "\n".join(
        m.text() for m in body.messages if m.role in ("system", "developer") and m.text()
    )
    turns = [Turn(role=m.role, content=m.text()) for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise InvalidRequest("messages must end with a user message that has text")
    return turns[-1].content, turns[:-1], instructions or None


@router.get("/models")
def list_models(runtime: RuntimeDep, caller: PrincipalDep) -> ModelList:
    records = collections.list_records(runtime, caller)
    return ModelList(data=[ModelCard(id=r.name, created=int(r.created_at.timestamp())) for r in records])


@router.get("/models/{model}")
def get_model(model: str, runtime: RuntimeDep, caller: PrincipalDep) -> ModelCard:
    record = collections.get_record(runtime, caller, model)
    return ModelCard(id=record.name, created=int(record.created_at.timestamp()))


@router.post(
    "/chat/completions",
    responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true"}}
    | errors(409, 502, 504),
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, runtime: RuntimeDep, caller: PrincipalDep
) -> ChatCompletionResponse:
    client = recognise(request.headers, body)
    requested = body.max_completion_tokens or body.max_tokens
    events: AsyncIterator[StreamEvent] | None = None
    if client.task:
        # A chat UI's own call (a title, tags): answered by the LLM from the conversation, no retrieval.
        count_task(client.task, body.model)
        messages = task_messages(body)
        task = answers.reply_to_task
        answer = await run_in_threadpool(task, runtime, caller, body.model, messages, max_tokens=requested)
        events = _replay(answer) if body.stream else None
    else:
        question, history, instructions = _conversation(body)
        asked = {"history": history, "instructions": instructions, "max_tokens": requested}
        if body.stream:
            stream = await run_in_threadpool(
                answers.start_stream, runtime, caller, body.model, question, **asked
            )
            events = stream.events()
        else:
            answer = await run_in_threadpool(answers.ask, runtime, caller, body.model, question, **asked)
    if events is not None:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(events, body.model, include_usage, chips=client.from_openwebui),
            media_type="text/event-stream",
        )
    if client.from_openwebui:
        # Not through the declared response model, which would drop the sources beside the reply.
        reply = ResponseWithSources(
            model=body.model,
            # Chips are citations: the closest pages of a refusal are a list in the text instead.
            choices=[
                Choice(
                    message=ChatMessageOut(content=answer.answer + closest_pages_block(answer.closest_pages)),
                    finish_reason=finish_reason(answer),
                )
            ],
            usage=UsageInfo(**answer.usage.model_dump()),
            sources=source_chips(body.model, answer.sources),
        )
        return JSONResponse(reply.model_dump(mode="json"))
    return ChatCompletionResponse(
        model=body.model,
        choices=[
            Choice(
                message=ChatMessageOut(content=answer.answer + answer_footer(answer)),
                finish_reason=finish_reason(answer),
            )
        ],
        usage=UsageInfo(**answer.usage.model_dump()),
    )


def finish_reason(answer: Answer) -> str:
    """OpenAI's: "length" where the answer stopped at max_tokens (a client may ask it to go on), else "stop"."""
    return "length" if answer.truncated else "stop"


async def _replay(answer: Answer) -> AsyncIterator[StreamEvent]:
    yield StreamEvent("token", answer.answer)
    yield StreamEvent("end", answer=answer)


async def _stream(
    events: AsyncIterator[StreamEvent], model: str, include_usage: bool, *, chips: bool = False
) -> AsyncIterator[str]:
    """Open WebUI (`chips`) gets the sources as its own source events, other clients a markdown list; the
    closest pages of a refusal are a markdown list for both."""
    chunk_id = completion_id()
    created = int(time.time())

    def chunk(delta: DeltaMessage, finish: str | None = None, usage: UsageInfo | None = None) -> str:
        body = ChatCompletionChunk(
            id=chunk_id,
            created=created,
            model=model,
            choices=[StreamChoice(delta=delta, finish_reason=finish)] if usage is None else [],
            usage=usage,
        )
        return f"data: {body.model_dump_json(exclude_none=usage is None)}\n\n"

    yield chunk(DeltaMessage(role="assistant", content=""))
    try:
        async for event in events:
            if event.kind == "token":
                yield chunk(DeltaMessage(content=event.text))
            elif event.answer is not None:
                answer = event.answer
                if chips:
                    for line in source_event_lines(chunk_id, created, model, answer.sources):
                        yield line
                footer = closest_pages_block(answer.closest_pages) if chips else answer_footer(answer)
                if footer:
                    yield chunk(DeltaMessage(content=footer))
                yield chunk(DeltaMessage(), finish=finish_reason(answer))
                if include_usage:
                    yield chunk(DeltaMessage(), usage=UsageInfo(**event.answer.usage.model_dump()))
    except RagsvcError as exc:
        # Streams always end: one error event, then the terminator, as vLLM does.
        yield f"data: {json.dumps(error_body(exc.code, exc.message))}\n\n"
    yield "data: [DONE]\n\n"


def _encoded(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def _embedding_response(embedded: EmbeddedTexts, encoding_format: str) -> EmbeddingResponse:
    return EmbeddingResponse(
        data=[
            EmbeddingData(index=i, embedding=_encoded(v, encoding_format))
            for i, v in enumerate(embedded.vectors)
        ],
        model=embedded.model,
        usage=EmbeddingUsage(prompt_tokens=embedded.tokens, total_tokens=embedded.tokens),
    )


@router.post("/embeddings", responses=errors(409))
async def create_embeddings(
    body: EmbeddingRequest, runtime: RuntimeDep, caller: PrincipalDep
) -> EmbeddingResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    embedded = await run_in_threadpool(
        embeddings.embed_texts, runtime, caller, texts, model=body.model, dimensions=body.dimensions
    )
    return _embedding_response(embedded, body.encoding_format)
