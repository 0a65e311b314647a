"""Ingestion speed on a doc folder, all measured in one run on the same files and the same model: ragsvc per
embedding runtime (end to end: parse, chunk, embed, store, HNSW built), the plain LlamaIndex pipeline, and
raw encode calls on ragsvc's own chunk texts (the compute limit); with retrieval quality per runtime.

Usage: python bench/ingest.py [DOCS] [--runtimes torch,onnx-int8] [--questions FILE] [--no-llamaindex]
    [--rounds N]
Needs the `bench` extra (pip install -e '.[bench]'). Tokens are the tokens the model reads: special tokens
included, truncation applied, padding excluded.
"""

# ruff: noqa: E402 - sys.path is fixed before the project's imports

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, where this file would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np

from eval.questions import load_questions
from ingest.chunk import ChunkingParams, chunk_document
from ingest.embed import MINILM, Embedder, EmbeddingSpec, LocalEmbedder, _resolve_local, local_embedder
from ingest.files import read_doc_file, scan_folder
from ingest.onnx_embed import OnnxEmbedder, onnx_embedder, with_runtime
from ingest.sandbox import Extractor
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.embeddings import stand_in
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings

DEFAULT_DOCS = Path(__file__).parents[1] / "../shared/data/aalto-scicomp-docs"
DEFAULT_QUESTIONS = Path(__file__).parents[1] / "eval/sets/aalto-scicomp.jsonl"


class TimedEmbedder:
    """Passes every call through to the embedder and adds up the seconds spent in embed_documents."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        started = time.perf_counter()
        try:
            return self.inner.embed_documents(texts)
        finally:
            self.seconds += time.perf_counter() - started


def embedder_for(runtime: str) -> Embedder:
    if runtime == "torch":
        return local_embedder(MINILM)
    return onnx_embedder(MINILM, runtime)  # type: ignore[arg-type]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the parse worker): steadier than wall time on a
    machine shared with other work, since it counts only what this run computed."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def first_gold_rank(ranked: list[str], gold: set[str]) -> int | None:
    """As bench/retrieval.py counts it: the rank of the first result from a gold page."""
    return next((rank for rank, source in enumerate(ranked, 1) if source in gold), None)


def rate(tokens: int, chunks: int, seconds: float, cpu: float) -> str:
    return (
        f"{tokens / seconds:6.0f} tokens/s {chunks / seconds:6.1f} chunks/s ({seconds:6.1f} s; "
        f"{tokens / cpu:5.0f} tokens per CPU-second)"
    )


def parse_and_chunk(docs: Path, torch_model: LocalEmbedder) -> tuple[list[str], list[int], float]:
    """ragsvc's read, parse (in its sandboxed worker) and chunk stages alone, with the pipeline's own parts."""
    params = ChunkingParams(max_tokens=torch_model.max_tokens)
    started = time.perf_counter()
    texts: list[str] = []
    tokens: list[int] = []
    files, _ = scan_folder(docs)
    with Extractor() as extractor:
        for doc in files:
            document = extractor.extract(doc.source, read_doc_file(docs, doc))
            for chunk in chunk_document(document, params, torch_model.count_tokens):
                texts.append(chunk.embed_text)
                tokens.append(chunk.tokens)
    return texts, tokens, time.perf_counter() - started


def raw_torch(model: LocalEmbedder, texts: list[str]) -> tuple[np.ndarray, float, float]:
    started, cpu = time.perf_counter(), cpu_seconds()
    vectors = model._st.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return vectors, time.perf_counter() - started, cpu_seconds() - cpu


def raw_onnx(model: OnnxEmbedder, texts: list[str]) -> tuple[np.ndarray, float, float]:
    """The bare model on the embedder's own inference path: tokenise (its truncating tokenizer, no ids kept
    from counting), then every text at once through `encode_ids` (batches of one token length, side by side
    on its threads). Ingestion embeds ~1,024 chunks at a time, which makes fewer texts of each length."""
    started, cpu = time.perf_counter(), cpu_seconds()
    encoded = [np.asarray(e.ids) for e in model._truncating.encode_batch(texts, add_special_tokens=True)]
    vectors = model.encode_ids(encoded)
    return vectors, time.perf_counter() - started, cpu_seconds() - cpu


def ragsvc_end_to_end(docs: Path, runtime: str, questions: list) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix=f"ragsvc-bench-ingest-{runtime}-"))
    service = open_runtime(Settings(data_dir=data_dir))
    try:
        spec = EmbeddingSpec(provider="local", model=with_runtime(MINILM, runtime))  # type: ignore[arg-type]
        timed = TimedEmbedder(embedder_for(runtime))
        # The timing wrapper stands in for the embedder the service would open for this model.
        stand_in(service, spec, timed)
        started, cpu = time.perf_counter(), cpu_seconds()
        summary = ingestion.ingest_folder(service, LOCAL, "bench", docs, embedding=spec, build=False)
        ingested = time.perf_counter() - started
        record = service.registry.get("bench")
        service.engine.build(record.live_index)
        service.engine.flush()
        total = time.perf_counter() - started
        total_cpu = cpu_seconds() - cpu
        tokens = sum(hit.payload["tokens"] for hit in service.engine.scroll(record.live_index, batch=1024))
        result: dict[str, Any] = {
            "files": summary.files,
            "failed": len(summary.failed),
            "chunks": summary.chunks_total,
            "tokens": tokens,
            "ingest_s": ingested,
            "total_s": total,
            "cpu_s": total_cpu,
            "embed_s": timed.seconds,
            "model": record.embedding.model,
        }
        for mode in ("dense", "hybrid"):
            hits, mrrs = [], []
            for q in questions:
                found = retrieval.search(service, LOCAL, "bench", q.question, top_k=10, mode=mode)
                ranked = [r.source for r in found]
                rank = first_gold_rank(ranked, set(q.sources))
                hits.append(1.0 if rank is not None and rank <= 5 else 0.0)
                mrrs.append(1.0 / rank if rank is not None else 0.0)
            if questions:
                result[mode] = (statistics.mean(hits), statistics.mean(mrrs))
        return result
    finally:
        service.close()


def llamaindex_pipeline(docs: Path, model_dir: Path, count_tokens: Any, max_tokens: int) -> dict[str, Any]:
    """SimpleDirectoryReader, then VectorStoreIndex.from_documents with HuggingFaceEmbedding and a
    QdrantVectorStore on qdrant-client's local mode: every default left as it is."""
    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    embedded: list[str] = []

    class RecordingEmbedding(HuggingFaceEmbedding):
        """Keeps the texts it embeds, to count afterwards the tokens the model read."""

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            embedded.extend(texts)
            return super()._get_text_embeddings(texts)

    embed_model = RecordingEmbedding(model_name=str(model_dir), device="cpu")
    client = QdrantClient(path=tempfile.mkdtemp(prefix="ragsvc-bench-llamaindex-"))
    try:
        started, cpu = time.perf_counter(), cpu_seconds()
        documents = SimpleDirectoryReader(
            str(docs), recursive=True, required_exts=[".rst", ".md", ".txt"]
        ).load_data()
        store = QdrantVectorStore(client=client, collection_name="bench")
        VectorStoreIndex.from_documents(
            documents,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
        )
        total = time.perf_counter() - started
        total_cpu = cpu_seconds() - cpu
    finally:
        client.close()
    counted = count_tokens(embedded)
    return {
        "files": len(documents),
        "chunks": len(embedded),
        "tokens": sum(min(n, max_tokens) for n in counted),
        "tokens_dropped": sum(max(n - max_tokens, 0) for n in counted),
        "total_s": total,
        "cpu_s": total_cpu,
    }


def cosine_to(reference: np.ndarray, vectors: np.ndarray) -> tuple[float, float]:
    cosines = (reference * vectors).sum(axis=1)
    return float(cosines.mean()), float(cosines.min())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("docs", type=Path, nargs="?", default=DEFAULT_DOCS)
    parser.add_argument("--runtimes", default="torch,onnx-int8")
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--no-questions", action="store_true")
    parser.add_argument("--no-llamaindex", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the timed runs; medians at the end")
    args = parser.parse_args()
    docs = args.docs.resolve()
    runtimes = args.runtimes.split(",")
    questions = [] if args.no_questions else [q for q in load_questions(args.questions) if q.answerable]
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    torch_model = local_embedder(MINILM)
    texts, tokens, chunk_s = parse_and_chunk(docs, torch_model)
    total_tokens = sum(tokens)
    print(f"{docs}: {len(texts)} chunks, {total_tokens} tokens read by the model")
    print(f"parse + chunk alone (ragsvc):     {len(texts) / chunk_s:8.1f} chunks/s  ({chunk_s:6.1f} s)")

    reference, seconds, cpu = raw_torch(torch_model, texts)
    torch_raw = (total_tokens / seconds, total_tokens / cpu)
    print(f"raw SentenceTransformer.encode:   {rate(total_tokens, len(texts), seconds, cpu)}")
    # Ratios are taken within a round, whose parts run minutes apart; the median over rounds is the figure.
    to_raw: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    to_llamaindex: dict[str, list[tuple[float, float]]] = {runtime: [] for runtime in runtimes}
    for round_number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"--- round {round_number} of {args.rounds}")
        raw = {"torch": torch_raw}
        for runtime in runtimes:
            if runtime == "torch":
                if round_number > 1:
                    _, seconds, cpu = raw_torch(torch_model, texts)
                    raw["torch"] = (total_tokens / seconds, total_tokens / cpu)
                    print(f"raw SentenceTransformer.encode:   {rate(total_tokens, len(texts), seconds, cpu)}")
                continue
            vectors, seconds, cpu = raw_onnx(embedder_for(runtime), texts)  # type: ignore[arg-type]
            raw[runtime] = (total_tokens / seconds, total_tokens / cpu)
            mean, worst = cosine_to(reference, vectors)
            print(
                f"raw ONNX Runtime ({runtime:9}):   {rate(total_tokens, len(texts), seconds, cpu)}\n"
                f"    cosine to torch fp32 on every chunk: mean {mean:.4f}, min {worst:.4f}"
            )

        results = {}
        for runtime in runtimes:
            r = ragsvc_end_to_end(docs, runtime, questions if round_number == 1 else [])
            results[runtime] = r
            wall, cpu = r["tokens"] / r["total_s"], r["tokens"] / r["cpu_s"]
            to_raw[runtime].append(wall / raw[runtime][0])
            print(
                f"ragsvc {runtime:9} end to end:   {rate(r['tokens'], r['chunks'], r['total_s'], r['cpu_s'])}\n"
                f"    = {wall / raw[runtime][0]:.2f}x raw {runtime} by wall time, "
                f"{cpu / raw[runtime][1]:.2f}x by CPU time\n"
                f"    {r['files']} files ({r['failed']} failed) into {r['model']}: embedding "
                f"{r['embed_s']:.1f} s ({r['tokens'] / r['embed_s'] / raw[runtime][0]:.2f}x raw), "
                f"everything else {r['total_s'] - r['embed_s']:.1f} s "
                f"(of it store + HNSW build after the last file {r['total_s'] - r['ingest_s']:.1f} s)"
            )
            for mode in ("dense", "hybrid"):
                if mode in r:
                    hit, mrr = r[mode]
                    print(f"    {mode:>6}: hit@5 {hit:.3f}  MRR@10 {mrr:.3f}  ({len(questions)} questions)")

        if not args.no_llamaindex:
            li = llamaindex_pipeline(
                docs, _resolve_local(MINILM), torch_model.count_tokens, torch_model.max_tokens
            )
            print(
                f"LlamaIndex end to end:            "
                f"{rate(li['tokens'], li['chunks'], li['total_s'], li['cpu_s'])}\n"
                f"    {li['files']} documents; {li['tokens_dropped']} tokens past the model's "
                f"{torch_model.max_tokens} silently dropped"
            )
            for runtime, r in results.items():
                by_wall = r["tokens"] / r["total_s"] / (li["tokens"] / li["total_s"])
                by_cpu = r["tokens"] / r["cpu_s"] / (li["tokens"] / li["cpu_s"])
                to_llamaindex[runtime].append((by_wall, by_cpu))
                print(
                    f"ragsvc {runtime} / LlamaIndex, embedded tokens/s: "
                    f"{by_wall:.2f}x by wall time, {by_cpu:.2f}x by CPU time"
                )

    if args.rounds > 1:
        print(f"--- medians over {args.rounds} rounds (each ratio within its round)")
        for runtime in runtimes:
            line = f"ragsvc {runtime}: {statistics.median(to_raw[runtime]):.2f}x raw"
            if to_llamaindex[runtime]:
                walls = [wall for wall, _ in to_llamaindex[runtime]]
                line += (
                    f", {statistics.median(walls):.2f}x LlamaIndex by wall time (rounds: "
                    f"{', '.join(f'{w:.2f}' for w in walls)}), "
                    f"{statistics.median(c for _, c in to_llamaindex[runtime]):.2f}x by CPU time"
                )
            print(line)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
