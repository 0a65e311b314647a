"""A sentence-transformers model on ONNX Runtime (fp32 or int8) on this machine's CPU, from the graphs
ingest/onnx_export.py makes. Tokens, truncation and mean pooling are the torch path's; texts run in batches of
one token length, so nothing is padded and the graphs take no attention mask.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexes.registry import EmbeddingIdentity
from ingest.embed import ModelUnavailable
from ingest.models import (
    MINILM,
    Runtime,
    canonical_model,
    fixed_tokenizer,
    model_dir,
    quiet_offline_libraries,
    rust_tokenizer,
    split_runtime,
    with_runtime,
)
from ingest.onnx_export import DEFAULT_CACHE, OUTPUT, export_model

if TYPE_CHECKING:
    import onnxruntime as ort

# Token ids kept from counting, for embedding those texts without tokenising them again: the chunker counts
# about 6 texts per chunk, and two batches of ingestion's ~1,024 chunks are in flight (ids of at most 256
# tokens: 16 MB at worst, about 7 MB for the Aalto docs' chunks).
_COUNTED_TEXTS = 16384
# A batch holds texts of one token length, at most this many tokens in all (at least one text).
_BATCH_TOKENS = 8192


def _session(path: str) -> ort.InferenceSession:
    """A single-threaded CPU session with every graph optimisation. Threads share it: each `run` call is
    independent, and ONNX Runtime releases the GIL while it computes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _batch_runner() -> ThreadPoolExecutor:
    """Threads that embed whole batches at once, one per CPU this process may run on. Batches side by side
    on single-threaded sessions outran one session splitting each batch over all cores: on 2 AVX2 cores,
    7,070-7,230 tokens/s against 6,360-6,420 (idle threads spinning) and 5,440-5,860 (sleeping); ONNX
    Runtime's intra-op threads wait on each other at every small op of a 6-layer model."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return ThreadPoolExecutor(max_workers=usable, thread_name_prefix="ragsvc-embed")


def onnx_embedder(model: str = MINILM, runtime: Runtime = "onnx-int8") -> OnnxEmbedder:
    """`model` loaded on ONNX Runtime in fp32 ('onnx') or int8 ('onnx-int8'), exported first if need be."""
    if runtime not in ("onnx", "onnx-int8"):
        raise ModelUnavailable(f"runtime {runtime!r} is not an ONNX Runtime one")
    return OnnxEmbedder(model, quantized=runtime == "onnx-int8")


class OnnxEmbedder:
    """A sentence-transformers model (BERT-style encoder, mean pooling) on ONNX Runtime on this machine's CPU.

    Its `model` carries the runtime ('...#onnx' or '...#onnx-int8'), so its vectors land in indexes of
    their own: a collection keeps the runtime it was built with.
    """

    provider = "local"

    def __init__(
        self,
        model: str = MINILM,
        *,
        quantized: bool = True,
        cache_dir: Path = DEFAULT_CACHE,
        batch_tokens: int = _BATCH_TOKENS,
    ) -> None:
        quiet_offline_libraries()
        base = canonical_model(split_runtime(model)[0])
        self.runtime: Runtime = "onnx-int8" if quantized else "onnx"
        self.model = with_runtime(base, self.runtime)
        self.batch_tokens = batch_tokens
        folder = model_dir(base)
        try:
            modules = json.loads((folder / "modules.json").read_text())
            pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
            if not pooling.get("pooling_mode_mean_tokens") or len(modules) > 3:
                raise ModelUnavailable(
                    f"{base!r}: only mean-pooled encoders run on ONNX Runtime here; name it {base}#torch "
                    "or set RAGSVC_EMBEDDING_RUNTIME=torch"
                )
            self.max_tokens = int(
                json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
            )
            self.dimensions = int(json.loads((folder / "config.json").read_text())["hidden_size"])
            tokenizer = rust_tokenizer(folder)
            # One counts whole texts (the chunker's sizes), one truncates as the model reads.
            self._whole = fixed_tokenizer(tokenizer)
            self._truncating = fixed_tokenizer(tokenizer, truncate_at=self.max_tokens)
            exported = export_model(folder, cache_dir)
            weights = str(exported.int8 if quantized else exported.fp32)
            # Questions run on the calling thread (one thread answers a dozen tokens as fast as all of them
            # on an idle machine, and does not stall when ingestion or the LLM keep the other cores busy);
            # chunks in batches on the batch runner's threads, all on this one session.
            self._session = _session(weights)
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(
                f"embedding model {base!r} could not be loaded on ONNX Runtime ({self.runtime}): {exc}"
            ) from exc
        self._counted: dict[str, np.ndarray] = {}
        self._counted_lock = threading.Lock()
        self._runner = _batch_runner()

    def close(self) -> None:
        """Stop the batch threads (a batch in flight finishes first)."""
        self._runner.shutdown()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens the model reads for each text, special tokens included, before truncation.

        The ids are kept a while: the chunker measures every chunk as the model will read it, and embedding
        that chunk then takes them instead of tokenising it again (0.6 s of 35 s over the Aalto docs).
        """
        encodings = self._whole.encode_batch(texts, add_special_tokens=True)
        fitting = [
            (text, e.ids) for text, e in zip(texts, encodings, strict=True) if len(e.ids) <= self.max_tokens
        ]
        with self._counted_lock:  # the chunker counts on ingestion's parse thread while another embeds
            for text, ids in fitting:
                self._counted[text] = np.asarray(ids, dtype=np.int32)
            while len(self._counted) > _COUNTED_TEXTS:  # the oldest go first
                del self._counted[next(iter(self._counted))]
        return [len(encoding.ids) for encoding in encodings]

    def token_ids(self, texts: list[str]) -> list[np.ndarray]:
        """What the model reads of each text: its ids, truncated to the model's maximum."""
        with self._counted_lock:
            ids = [self._counted.pop(text, None) for text in texts]
        missing = [row for row, found in enumerate(ids) if found is None]
        encodings = self._truncating.encode_batch([texts[row] for row in missing], add_special_tokens=True)
        for row, encoding in zip(missing, encodings, strict=True):
            ids[row] = np.asarray(encoding.ids, dtype=np.int32)
        return ids  # type: ignore[return-value] - every row is filled

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        ids = self._truncating.encode(text, add_special_tokens=True).ids
        return self._run(np.asarray([ids]))[0].tolist()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one per text."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self.encode_ids(self.token_ids(texts))

    def encode_ids(self, encoded: list[np.ndarray]) -> np.ndarray:
        """Unit vectors of tokenised texts, in batches of texts of one token length (nothing is padded, so a
        vector depends on its own text only, bit for bit), side by side on the batch runner's threads."""
        by_length: dict[int, list[int]] = {}
        for row, ids in enumerate(encoded):
            by_length.setdefault(len(ids), []).append(row)
        batches = []
        for length, rows in by_length.items():
            size = max(1, self.batch_tokens // length)
            batches.extend(rows[start : start + size] for start in range(0, len(rows), size))
        # The largest first, so that the threads finish together on small ones.
        batches.sort(key=lambda rows: len(rows) * len(encoded[rows[0]]), reverse=True)
        vectors = np.empty((len(encoded), self.dimensions), dtype=np.float32)

        def embed(rows: list[int]) -> None:
            vectors[rows] = self._run(np.stack([encoded[row] for row in rows]))

        for _ in self._runner.map(embed, batches):  # re-raises what a batch raised
            pass
        return vectors

    def _run(self, input_ids: np.ndarray) -> np.ndarray:
        """Unit vectors of texts of one length: `input_ids` is (texts, tokens)."""
        input_ids = input_ids.astype(np.int64, copy=False)
        feeds = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids)}
        hidden = self._session.run([OUTPUT], feeds)[0]
        pooled = hidden.mean(axis=1)  # mean pooling: every token is the text's own
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def identity(self, chunking: str) -> EmbeddingIdentity:
        return EmbeddingIdentity(
            provider=self.provider, model=self.model, dimensions=self.dimensions, chunking=chunking
        )
