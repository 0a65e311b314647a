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
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from indexes.errors import InvalidRequest, RagsvcError
from ragsvc.answer import Turn
from ragsvc.api.deps import PrincipalDep, RuntimeDep
from ragsvc.api.errors import error_body
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
from ragsvc.service import answers, collections, embeddings
from ragsvc.service.answers import AnswerStream
from ragsvc.service.embeddings import EmbeddedTexts
from ragsvc.service.retrieval import Source

router = APIRouter(prefix="/v1", tags=["openai"])


def citation_block(sources: list[Source]) -> str:
    """Markdown links to the cited sections, numbered as in the answer."""
    if not sources:
        return ""
    lines = []
    for i, s in enumerate(sources, 1):
        label = f"{s.source} — {s.section}" if s.section else s.source
        lines.append(f"[{i}] [{label}]({s.link})" if s.link else f"[{i}] {label}")
    return "\n\nSources:\n" + "\n".join(lines)


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
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true"}
    },
)
async def chat_completions(
    body: ChatCompletionRequest, runtime: RuntimeDep, caller: PrincipalDep
) -> ChatCompletionResponse:
    question, history, instructions = _conversation(body)
    asked = {
        "history": history,
        "instructions": instructions,
        "max_tokens": body.max_completion_tokens or body.max_tokens,
    }
    if body.stream:
        stream = await run_in_threadpool(answers.start_stream, runtime, caller, body.model, question, **asked)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(stream, body.model, include_usage), media_type="text/event-stream")
    answer = await run_in_threadpool(answers.ask, runtime, caller, body.model, question, **asked)
    return ChatCompletionResponse(
        model=body.model,
        choices=[Choice(message=ChatMessageOut(content=answer.answer + citation_block(answer.sources)))],
        usage=UsageInfo(**answer.usage.model_dump()),
    )


async def _stream(stream: AnswerStream, model: str, include_usage: bool) -> AsyncIterator[str]:
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
        async for event in stream.events():
            if event.kind == "token":
                yield chunk(DeltaMessage(content=event.text))
            elif event.answer is not None:
                yield chunk(DeltaMessage(content=citation_block(event.answer.sources)))
                yield chunk(DeltaMessage(), finish="stop")
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


@router.post("/embeddings")
async def create_embeddings(
    body: EmbeddingRequest, runtime: RuntimeDep, caller: PrincipalDep
) -> EmbeddingResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    embedded = await run_in_threadpool(
        embeddings.embed_texts, runtime, caller, texts, model=body.model, dimensions=body.dimensions
    )
    return _embedding_response(embedded, body.encoding_format)
