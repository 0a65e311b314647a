"""The answering LLM: any OpenAI-compatible chat endpoint, through the openai client (a streamed reply in a
`with` block, which closes it the moment its reader stops).

Transport failures become ragsvc errors that name the LLM, so a client can tell them from its own mistakes.
Tokens are counted with the server's own tokenizer (llama.cpp's /tokenize) when it has one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import httpx

from eval.judge import p_yes, said_yes
from indexes.errors import RagsvcError
from ragsvc.metrics import LLM_FIRST_TOKEN_SECONDS, LLM_SECONDS, LLM_TOKENS
from ragsvc.settings import Settings

if TYPE_CHECKING:
    import openai
    from llama_index.core.llms import ChatMessage
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

# llama-index and openai are imported on the first call to the LLM, not at start: together they are about
# half of what a server start imports, and a restart that serves searches needs neither.


def chat_message(role: str, content: str) -> ChatMessage:
    from llama_index.core.llms import ChatMessage

    return ChatMessage(role=role, content=content)


# Conservative when no tokenizer endpoint exists: English runs about four characters a token.
CHARS_PER_TOKEN = 3
# Token counts of recent texts: the system prompt and often-retrieved chunks are counted once, not per question.
COUNT_CACHE_SIZE = 4096
# Alternatives read for the first token of a yes-or-no reply (OpenAI's maximum is 20).
TOP_LOGPROBS = 10
# Texts not yet counted are sent to the tokenizer endpoint at once rather than one round trip after another.
TOKENIZE_CONCURRENCY = 8


class LLMUnavailable(RagsvcError):
    code = "llm_unavailable"


class LLMTimeout(RagsvcError):
    code = "llm_timeout"


class LLMFailed(RagsvcError):
    code = "llm_error"


@dataclass
class Reply:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    pieces: int = 0  # streamed pieces with text read so far (about one token each)


@dataclass
class Delta:
    """One piece of a streamed reply; the last one carries the usage and finish reason."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class AnswerLLM:
    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.llm_base_url.rstrip("/")
        self.model = settings.llm_model
        self.context_window = settings.llm_context_window
        self.max_tokens = settings.llm_max_tokens
        self._tokenize_url: str | None = self.base_url.removesuffix("/v1") + "/tokenize"
        self._http = httpx.Client(
            timeout=httpx.Timeout(5.0), limits=httpx.Limits(max_keepalive_connections=TOKENIZE_CONCURRENCY)
        )
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._counts_lock = threading.Lock()
        self._tokenizing = ThreadPoolExecutor(TOKENIZE_CONCURRENCY, thread_name_prefix="ragsvc-tokenize")
        self._settings = settings

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text by the server's tokenizer, else a conservative estimate."""
        if self._tokenize_url is not None:
            try:
                distinct = list(dict.fromkeys(texts))
                with self._counts_lock:
                    known = {t: self._counts[t] for t in distinct if t in self._counts}
                    for text in known:
                        self._counts.move_to_end(text)
                missing = [t for t in distinct if t not in known]
                counted = dict(zip(missing, self._tokenizing.map(self._tokenize, missing), strict=True))
                with self._counts_lock:
                    self._counts.update(counted)
                    while len(self._counts) > COUNT_CACHE_SIZE:
                        self._counts.popitem(last=False)
                known |= counted
                return [known[text] for text in texts]
            except httpx.HTTPStatusError:
                self._tokenize_url = None  # this server has no tokenizer endpoint: estimate from now on
            except (httpx.TransportError, ValueError, KeyError):
                pass  # unreachable now; the chat call will say so
        return [len(text) // CHARS_PER_TOKEN + 1 for text in texts]

    def _tokenize(self, text: str) -> int:
        response = self._http.post(self._tokenize_url or "", json={"content": text})
        response.raise_for_status()
        return len(response.json()["tokens"])

    def ping(self) -> bool:
        try:
            return self._http.get(f"{self.base_url}/models", timeout=2.0).status_code < 500
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._tokenizing.shutdown(wait=False)
        self._http.close()
        if "_client" in self.__dict__:
            self._client.close()

    def chat(self, messages: list[ChatMessage], max_tokens: int | None = None) -> Reply:
        with self._errors(), _timed():
            response = self._client.chat.completions.create(**self._request(messages, max_tokens))
        return _reply(response)

    def yes_probability(self, messages: list[ChatMessage]) -> tuple[Reply, float | None]:
        """A one-token reply to a yes-or-no question and P(yes) among yes and no: from the endpoint's
        logprobs where it sends them, else 1 or 0 from the reply's word; None when the reply is neither."""
        import openai

        request = self._request(messages, 1)
        with self._errors(), _timed():
            try:
                logprobs = {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
                response = self._client.chat.completions.create(**request, **logprobs)
            except (openai.BadRequestError, openai.UnprocessableEntityError):
                # an endpoint that takes no logprobs: the reply's word decides
                response = self._client.chat.completions.create(**request)
        reply = _reply(response)
        choices = response.choices or [None]
        content = getattr(getattr(choices[0], "logprobs", None), "content", None) or []
        alternatives = [
            {"token": alt.token, "logprob": alt.logprob}
            for alt in (content[0].top_logprobs if content else [])
        ]
        probability = p_yes(alternatives) if alternatives else None
        if probability is None and (said := said_yes(reply.text)) is not None:
            probability = 1.0 if said else 0.0
        return reply, probability

    # A stream left unread is closed by its `with` block when the reader closes this iterator (a guard cut the
    # answer), which stops llama-server generating. Not by the garbage collector: an openai stream is in a
    # reference cycle with its own generator, so its response stayed open until a collection, which could run
    # inside httpx's connection-pool lock on the thread of a later call and deadlock it (seen in an eval run).
    async def stream(
        self, messages: list[ChatMessage], max_tokens: int | None = None
    ) -> AsyncIterator[Delta]:
        """The reply piece by piece."""
        reading = _StreamReading(time.perf_counter())
        async with self._aerrors():
            request = self._request(messages, max_tokens, stream=True)
            async with await self._async_client.chat.completions.create(**request) as chunks:
                async for chunk in chunks:
                    if (delta := reading.delta(chunk)) is not None:
                        yield delta
        reading.end(self.base_url)

    def stream_chat(self, messages: list[ChatMessage], max_tokens: int | None = None) -> Iterator[Delta]:
        """`stream` for a caller on a worker thread: a whole answer read as it comes, so that it can be cut."""
        reading = _StreamReading(time.perf_counter())
        with self._errors(), _timed():
            with self._client.chat.completions.create(
                **self._request(messages, max_tokens, stream=True)
            ) as chunks:
                for chunk in chunks:
                    if (delta := reading.delta(chunk)) is not None:
                        yield delta
        reading.end(self.base_url, observe=False)

    def _request(
        self, messages: list[ChatMessage], max_tokens: int | None, stream: bool = False
    ) -> dict[str, Any]:
        """Every call's request: greedy, the repetition penalties, and its own max_tokens."""
        request = {
            "model": self.model,
            "messages": [{"role": str(m.role.value), "content": m.content or ""} for m in messages],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": 0.0,
            **sampling(self._settings),
        }
        if stream:
            request |= {"stream": True, "stream_options": {"include_usage": True}}
        return request

    @cached_property
    def _client(self) -> openai.OpenAI:
        import openai

        return openai.OpenAI(**self._client_options())

    @cached_property
    def _async_client(self) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(**self._client_options())

    def _client_options(self) -> dict[str, Any]:
        settings = self._settings
        return {
            "base_url": self.base_url,
            "api_key": settings.llm_api_key,
            "timeout": settings.llm_timeout,
            "max_retries": settings.llm_retries,
        }

    def _translate(self, exc: Exception) -> RagsvcError:
        import openai

        if isinstance(exc, openai.APITimeoutError | asyncio.TimeoutError | httpx.TimeoutException):
            return LLMTimeout(f"the LLM at {self.base_url} did not answer in time")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return LLMUnavailable(f"the LLM at {self.base_url} is unreachable: {cause}")
        if isinstance(exc, openai.APIStatusError):
            return LLMFailed(f"the LLM at {self.base_url} answered {exc.status_code}: {exc.message}")
        if isinstance(exc, httpx.HTTPError):
            return LLMFailed(f"the LLM at {self.base_url} broke off its reply: {exc}")
        raise exc

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (TimeoutError, _openai_error(), httpx.HTTPError) as exc:
            raise self._translate(exc) from exc

    @asynccontextmanager
    async def _aerrors(self) -> AsyncIterator[None]:
        try:
            yield
        except (TimeoutError, _openai_error(), httpx.HTTPError) as exc:
            raise self._translate(exc) from exc


def _openai_error() -> Any:
    import openai

    return openai.OpenAIError


def sampling(settings: Settings) -> dict[str, float]:
    """The request's penalties against repetition (OpenAI's names, which llama-server, vLLM and Ollama take);
    none is sent when zero, so an endpoint that knows none of them is not bothered."""
    chosen = {
        "frequency_penalty": settings.llm_frequency_penalty,
        "presence_penalty": settings.llm_presence_penalty,
    }
    return {name: value for name, value in chosen.items() if value}


def _reply(response: ChatCompletion) -> Reply:
    choice = response.choices[0] if response.choices else None
    usage = response.usage
    reply = Reply(
        ((choice.message.content if choice else None) or "").strip(),
        usage.prompt_tokens if usage else None,
        usage.completion_tokens if usage else None,
        choice.finish_reason if choice else None,
    )
    _count_usage(reply.prompt_tokens, reply.completion_tokens)
    return reply


@dataclass
class _StreamReading:
    """Turns the stream's chunks into Deltas, timing the first token and checking the reply ended."""

    started: float
    finished: bool = False
    first_text: bool = True

    def delta(self, chunk: ChatCompletionChunk) -> Delta | None:
        choice = chunk.choices[0] if chunk.choices else None
        text = (choice.delta.content if choice and choice.delta else None) or ""
        finish = choice.finish_reason if choice else None
        prompt, completion = (
            (chunk.usage.prompt_tokens, chunk.usage.completion_tokens) if chunk.usage else (None, None)
        )
        self.finished = self.finished or finish is not None
        if text and self.first_text:
            self.first_text = False
            LLM_FIRST_TOKEN_SECONDS.observe(time.perf_counter() - self.started)
        if not (text or chunk.usage or finish):
            return None
        _count_usage(prompt, completion)
        return Delta(text, prompt, completion, finish)

    def end(self, base_url: str, *, observe: bool = True) -> None:
        if observe:
            LLM_SECONDS.observe(time.perf_counter() - self.started)
        if not self.finished:
            # A connection closed mid-reply can look like a normal end of body; only finish_reason says done.
            raise LLMFailed(f"the LLM at {base_url} broke off its reply before finishing it")


@dataclass
class SpentTime:
    seconds: float = 0.0


_spent: ContextVar[SpentTime | None] = ContextVar("ragsvc_llm_spent", default=None)


@contextmanager
def llm_time() -> Iterator[SpentTime]:
    """The time chat calls made within the block (on this thread) spent in the LLM, as it adds up."""
    spent = SpentTime()
    token = _spent.set(spent)
    try:
        yield spent
    finally:
        _spent.reset(token)


@contextmanager
def _timed() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        LLM_SECONDS.observe(elapsed)
        if (spent := _spent.get()) is not None:
            spent.seconds += elapsed


def _count_usage(prompt: int | None, completion: int | None) -> None:
    if prompt:
        LLM_TOKENS.labels(kind="prompt").inc(prompt)
    if completion:
        LLM_TOKENS.labels(kind="completion").inc(completion)
