"""Embedding models as the service uses them: a user's choice completed from the settings, each collection's
own model (checked against what it recorded), chunk sizes per model, and `/v1/embeddings` on local models."""

from __future__ import annotations

from dataclasses import dataclass

from indexes.errors import EmbeddingMismatch, InvalidRequest
from indexes.registry import CollectionRecord
from ingest.chunk import ChunkingParams
from ingest.embed import Embedder, EmbeddingSpec, ModelNotServed, checked_size
from ingest.embedders import open_embedder
from ingest.models import MINILM, canonical_model, on_runtime
from ragsvc.service.access import Principal
from ragsvc.service.metering import charged
from ragsvc.service.runtime import EmbedderCache, Runtime
from ragsvc.settings import Settings

# OpenAI's own limit on texts per embeddings request.
MAX_EMBEDDING_INPUTS = 2048


def resolve(settings: Settings, spec: EmbeddingSpec | None) -> EmbeddingSpec:
    """A complete spec: what the user left unset comes from the settings' defaults."""
    s = settings
    spec = spec or EmbeddingSpec()
    provider = spec.provider or ("openai" if spec.url else s.embedding_provider)
    if spec.model is None and provider != s.embedding_provider:
        raise InvalidRequest(f"name the embedding model to use with the {provider} provider")
    if provider == "local":
        model = on_runtime(spec.model or s.embedding_model, s.embedding_runtime)
        return spec.model_copy(update={"provider": "local", "model": model})
    is_default = spec.model in (None, s.embedding_model) and s.embedding_provider == "openai"

    def default(value: object, setting: object) -> object:
        return value if value is not None else (setting if is_default else None)

    return spec.model_copy(
        update={
            "provider": "openai",
            "model": spec.model or s.embedding_model,
            "url": spec.url or s.embedding_url,
            "query_prefix": default(spec.query_prefix, s.embedding_query_prefix),
            "document_prefix": default(spec.document_prefix, s.embedding_document_prefix),
            "input_type": default(spec.input_type, s.embedding_input_type),
            "max_tokens": spec.max_tokens or s.embedding_max_tokens,
        }
    )


def _cache_key(spec: EmbeddingSpec) -> EmbeddingSpec:
    """A local model is loaded once whatever else a spec says; an endpoint is one per spec."""
    if spec.provider == "local" and spec.model is not None:
        return EmbeddingSpec(provider="local", model=canonical_model(spec.model))
    return spec


def open_cached(embedders: EmbedderCache, settings: Settings, spec: EmbeddingSpec) -> Embedder:
    """The embedder of a complete spec from `embedders`, opened there if it is not yet; its vector size is
    checked against the spec's."""
    key = _cache_key(spec)

    def open_one(spec: EmbeddingSpec) -> Embedder:
        return open_embedder(
            spec,
            api_key=settings.embedding_api_key,
            batch_size=settings.embedding_batch_size,
            timeout=settings.embedding_timeout,
            retries=settings.embedding_retries,
        )

    return checked_size(spec, embedders.get(key, open_one))


def opened(runtime: Runtime, spec: EmbeddingSpec) -> Embedder:
    """The embedder of a complete spec, opened once per runtime and shared by every collection on it."""
    return open_cached(runtime.embedders, runtime.settings, spec)


def stand_in(runtime: Runtime, spec: EmbeddingSpec, embedder: Embedder) -> None:
    """Serve the model `spec` names with `embedder` from now on (benchmarks time a model through this)."""
    runtime.embedders.put(_cache_key(resolve(runtime.settings, spec)), embedder)


def server_model(settings: Settings) -> EmbeddingSpec:
    """The local model this server serves at /v1/embeddings: the configured one, or MiniLM when the
    configured default is an endpoint."""
    local = settings.embedding_model if settings.embedding_provider == "local" else MINILM
    return EmbeddingSpec(provider="local", model=local)


def chosen_embedder(runtime: Runtime, spec: EmbeddingSpec | None) -> Embedder:
    """The embedder a user's choice names, its unset fields taken from the settings."""
    return opened(runtime, resolve(runtime.settings, spec))


def spec_of(settings: Settings, record: CollectionRecord) -> EmbeddingSpec:
    """The complete spec of a collection's recorded model; only the endpoint may come from settings."""
    e = record.embedding
    local = e.provider == "local"
    return EmbeddingSpec(
        provider="local" if local else "openai",
        model=e.model,
        url=None if local else (record.embedding_url or settings.embedding_url),
        dimensions=e.dimensions,
        query_prefix=e.query_prefix,
        document_prefix=e.document_prefix,
        input_type=e.input_type,
        max_tokens=None if local else settings.embedding_max_tokens,
    )


def embedder_for(runtime: Runtime, record: CollectionRecord) -> Embedder:
    """The embedder of the collection's own model, whatever this server's default is."""
    if record.embedding.provider not in ("local", "openai"):
        raise EmbeddingMismatch(
            f"collection {record.name!r} was embedded by provider {record.embedding.provider!r}, "
            "which this server does not have"
        )
    embedder = opened(runtime, spec_of(runtime.settings, record))
    if embedder.dimensions != record.embedding.dimensions:
        raise EmbeddingMismatch(
            f"collection {record.name!r} holds {record.embedding.dimensions}-d vectors of "
            f"{record.embedding.model}; the model loaded under that name makes {embedder.dimensions}-d"
        )
    return embedder


def same_model(record: CollectionRecord, spec: EmbeddingSpec) -> bool:
    """Whether `spec` (as the user gave it) names the model the collection is embedded with."""
    e = record.embedding
    return (
        (spec.provider is None or spec.provider == e.provider)
        and (spec.model is None or canonical_model(spec.model) == e.model)
        and (spec.dimensions is None or spec.dimensions == e.dimensions)
    )


def chunking_for_model(settings: Settings, embedder: Embedder) -> ChunkingParams:
    """Chunk sizes for a new collection on this model."""
    return ChunkingParams(
        max_tokens=embedder.max_tokens,
        target_tokens=settings.chunk_tokens,
        overlap_tokens=settings.chunk_overlap_tokens,
    )


def chunking_for(record: CollectionRecord) -> ChunkingParams:
    """The chunk sizes the collection was made with, so that new files are cut like the stored ones (a
    reindexed collection keeps the chunks it had)."""
    try:
        return ChunkingParams.from_label(record.embedding.chunking)
    except ValueError as exc:
        raise EmbeddingMismatch(f"collection {record.name!r}: {exc}") from None


def served_embedding_models(settings: Settings) -> list[str]:
    """Local models that `/v1/embeddings` serves: the packaged MiniLM and the configured local model."""
    models = {MINILM}
    if settings.embedding_provider == "local":
        models.add(canonical_model(settings.embedding_model))
    return sorted(models)


@dataclass
class EmbeddedTexts:
    model: str
    vectors: list[list[float]]
    tokens: int  # what the model read, each text cut at its maximum


def embed_texts(
    runtime: Runtime, caller: Principal, texts: list[str], *, model: str, dimensions: int | None = None
) -> EmbeddedTexts:
    """OpenAI's embeddings call on a local model. Texts longer than the model reads are truncated by it."""
    if not texts or len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"input must hold 1 to {MAX_EMBEDDING_INPUTS} texts, got {len(texts)}")
    if any(not t for t in texts):
        raise InvalidRequest("input must not contain empty strings")
    served = served_embedding_models(runtime.settings)
    if canonical_model(model) not in served:
        raise ModelNotServed(f"model {model!r} is not served here; /v1/embeddings serves {', '.join(served)}")
    embedder = (
        runtime.embedder
        if canonical_model(model) == runtime.embedder.model
        else opened(runtime, EmbeddingSpec(provider="local", model=model))
    )
    if dimensions is not None and dimensions != embedder.dimensions:
        raise InvalidRequest(
            f"{embedder.model} makes {embedder.dimensions}-d vectors and cannot shorten them to {dimensions}"
        )
    tokens = sum(min(n, embedder.max_tokens) for n in embedder.count_tokens(texts))
    # Not about a collection: usage rows name none.
    with charged(runtime, caller, "", embedder.model, embedding_tokens=tokens):
        vectors = embedder.embed_documents(texts)
    return EmbeddedTexts(model=embedder.model, vectors=vectors, tokens=tokens)
