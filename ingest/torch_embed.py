"""A local sentence-transformers model on torch, on this machine's CPU: the packaged MiniLM or a model folder.
Its own tokenizer also sizes chunks, so that no chunk is longer than what the model reads."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from indexes.registry import EmbeddingIdentity
from ingest.embed import ModelUnavailable
from ingest.models import MINILM, PACKAGED, fixed_tokenizer, model_dir, quiet_offline_libraries

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class LocalEmbedder:
    """A sentence-transformers model on this machine's CPU."""

    provider = "local"

    def __init__(self, model: str = MINILM, batch_size: int = 64) -> None:
        quiet_offline_libraries()
        from sentence_transformers import SentenceTransformer

        self.model = MINILM if model in PACKAGED else model
        try:
            self._st = SentenceTransformer(str(model_dir(model)), device="cpu")
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
