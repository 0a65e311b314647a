"""Opening the embedder a complete spec names: a local model on its runtime (torch or ONNX Runtime), or an
OpenAI-compatible endpoint. Nothing is cached here: the service layer keeps what it opened, per runtime."""

from __future__ import annotations

from ingest.embed import Embedder, EmbeddingSpec, ModelUnavailable, checked_size
from ingest.models import MINILM, split_runtime
from ingest.onnx_embed import OnnxEmbedder
from ingest.openai_embed import OpenAIEmbedder
from ingest.torch_embed import LocalEmbedder


def local_embedder(model: str = MINILM) -> LocalEmbedder | OnnxEmbedder:
    """A local model loaded on the runtime its id names ('all-MiniLM-L6-v2#onnx-int8'; plain: torch)."""
    base, runtime = split_runtime(model)
    if runtime == "torch":
        return LocalEmbedder(base)
    return OnnxEmbedder(base, quantized=runtime == "onnx-int8")


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
