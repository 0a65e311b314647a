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
from llama_index.core.llms import ChatMessage

from indexes.errors import InvalidRequest, RagsvcError
from ingest.embed import MINILM, LocalEmbedder, ModelNotServed, canonical_model, local_embedder
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
from ragsvc.api.deps import ServicesDep
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
from ragsvc.api.openwebui import (
    ResponseWithSources,
    count_task,
    recognise,
    source_chips,
    source_event_lines,
)
from ragsvc.retrieval import Source
from ragsvc.services import Services

router = APIRouter(prefix="/v1", tags=["openai"])

# OpenAI's own limit on texts per embeddings request.
MAX_EMBEDDING_INPUTS = 2048


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


def _prepare(services: Services, body: ChatCompletionRequest) -> Prompt:
    question, history, instructions = _conversation(body)
    prompt = prepare(services, body.model, question, history=history, instructions=instructions)
    requested = body.max_completion_tokens or body.max_tokens
    if requested:
        prompt.max_tokens = min(prompt.max_tokens, requested)
    return prompt


@router.get("/models")
def list_models(services: ServicesDep) -> ModelList:
    return ModelList(
        data=[ModelCard(id=r.name, created=int(r.created_at.timestamp())) for r in services.registry.list()]
    )


@router.get("/models/{model}")
def get_model(model: str, services: ServicesDep) -> ModelCard:
    record = services.registry.get(model)
    return ModelCard(id=record.name, created=int(record.created_at.timestamp()))


@router.post(
    "/chat/completions",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true"}
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, services: ServicesDep
) -> ChatCompletionResponse:
    services.registry.get(body.model)  # an unknown model is a 404 before any work
    caller = recognise(request.headers, body)
    events: AsyncIterator[StreamEvent] | None = None
    if caller.task:
        answer = await run_in_threadpool(_task_reply, services, body, caller.task)
        events = _replay(answer) if body.stream else None
    else:
        prompt = await run_in_threadpool(_prepare, services, body)
        if body.stream:
            events = stream_answer(services, body.model, prompt)
        else:
            answer = await run_in_threadpool(answer_prompt, services, body.model, prompt)
    if events is not None:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(body.model, events, include_usage, chips=caller.from_openwebui),
            media_type="text/event-stream",
        )
    if caller.from_openwebui:
        # Not through the declared response model, which would drop the sources beside the reply.
        reply = ResponseWithSources(
            model=body.model,
            choices=[Choice(message=ChatMessageOut(content=answer.answer))],
            usage=UsageInfo(**answer.usage.model_dump()),
            sources=source_chips(body.model, answer.sources),
        )
        return JSONResponse(reply.model_dump(mode="json"))
    return ChatCompletionResponse(
        model=body.model,
        choices=[Choice(message=ChatMessageOut(content=answer.answer + citation_block(answer.sources)))],
        usage=UsageInfo(**answer.usage.model_dump()),
    )


def _task_reply(services: Services, body: ChatCompletionRequest, task: str) -> Answer:
    """A chat UI's own call (a title, tags): the LLM answers the conversation as sent, with no retrieval."""
    count_task(task, body.model)
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    messages = [ChatMessage(role=roles[m.role], content=m.text()) for m in body.messages if m.role in roles]
    requested = body.max_completion_tokens or body.max_tokens
    return reply_without_retrieval(services, body.model, messages, requested)


async def _replay(answer: Answer) -> AsyncIterator[StreamEvent]:
    yield StreamEvent("token", answer.answer)
    yield StreamEvent("end", answer=answer)


async def _stream(
    model: str, events: AsyncIterator[StreamEvent], include_usage: bool, *, chips: bool = False
) -> AsyncIterator[str]:
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
                if chips:
                    for line in source_event_lines(chunk_id, created, model, event.answer.sources):
                        yield line
                else:
                    yield chunk(DeltaMessage(content=citation_block(event.answer.sources)))
                yield chunk(DeltaMessage(), finish="stop")
                if include_usage:
                    yield chunk(DeltaMessage(), usage=UsageInfo(**event.answer.usage.model_dump()))
    except RagsvcError as exc:
        # Streams always end: one error event, then the terminator, as vLLM does.
        yield f"data: {json.dumps(error_body(exc.code, exc.message))}\n\n"
    yield "data: [DONE]\n\n"


def served_embedding_models(services: Services) -> list[str]:
    """Local models that `/v1/embeddings` serves: the packaged MiniLM and the configured local model."""
    models = {MINILM}
    if services.settings.embedding_provider == "local":
        models.add(canonical_model(services.settings.embedding_model))
    return sorted(models)


def _served_embedder(services: Services, model: str) -> LocalEmbedder:
    served = served_embedding_models(services)
    if canonical_model(model) not in served:
        raise ModelNotServed(f"model {model!r} is not served here; /v1/embeddings serves {', '.join(served)}")
    if canonical_model(model) == services.embedder.model:
        return services.embedder
    return local_embedder(model)


def embed_texts(services: Services, body: EmbeddingRequest) -> EmbeddingResponse:
    """OpenAI's embeddings call on a local model. Texts longer than the model reads are truncated by it."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"input must hold 1 to {MAX_EMBEDDING_INPUTS} texts, got {len(texts)}")
    if any(not t for t in texts):
        raise InvalidRequest("input must not contain empty strings")
    embedder = _served_embedder(services, body.model)
    if body.dimensions is not None and body.dimensions != embedder.dimensions:
        raise InvalidRequest(
            f"{embedder.model} makes {embedder.dimensions}-d vectors and cannot shorten them to {body.dimensions}"
        )
    vectors = embedder.embed_documents(texts)
    tokens = sum(min(n, embedder.max_tokens) for n in embedder.count_tokens(texts))

    def encoded(vector: list[float]) -> list[float] | str:
        if body.encoding_format == "base64":
            return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
        return vector

    return EmbeddingResponse(
        data=[EmbeddingData(index=i, embedding=encoded(v)) for i, v in enumerate(vectors)],
        model=embedder.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


@router.post("/embeddings")
async def create_embeddings(body: EmbeddingRequest, services: ServicesDep) -> EmbeddingResponse:
    return await run_in_threadpool(embed_texts, services, body)
