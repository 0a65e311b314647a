"""ragsvc as eval's subject: its search and answers as eval's retriever and answerer over one Runtime (the
local user's view), a local cross-encoder as its reranker, and the runtime an evaluation runs on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eval.runner import GeneratedAnswer, RetrievedChunk
from indexes.errors import StoreBusy
from ingest.models import quiet_offline_libraries
from ragsvc.llm import llm_time
from ragsvc.owner import DataDirLock
from ragsvc.service import answers, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings


def _chunk(source: Any) -> RetrievedChunk:
    return RetrievedChunk(source=source.source, section=source.section, score=source.score, text=source.text)


def runtime_retriever(runtime: Runtime, collection: str):  # noqa: ANN201 - an eval.runner.Retriever
    def retrieve_chunks(question: str, top_k: int, mode: str) -> list[RetrievedChunk]:
        found = retrieval.search(runtime, LOCAL, collection, question, top_k=top_k, mode=mode)  # type: ignore[arg-type]
        return [_chunk(s) for s in found]

    return retrieve_chunks


def runtime_answerer(runtime: Runtime, collection: str, mode: str | None):  # noqa: ANN201 - an Answerer
    def answer(question: str) -> GeneratedAnswer:
        # The generate stage: the time this answer's chat calls (condensing included) spent in the LLM.
        with llm_time() as spent:
            result, check_p_yes = answers.ask_checked(runtime, LOCAL, collection, question, mode=mode)  # type: ignore[arg-type]
        unseen, terms = retrieval.unseen_terms(runtime, collection, question)
        # What the LLM read: the sources, or the closest pages of an answer that cites none (a refusal).
        read = result.sources or result.closest_pages
        return GeneratedAnswer(
            text=result.answer,
            sources=[_chunk(s) for s in read],
            generate_ms=spent.seconds * 1000 if spent.seconds else None,
            check_p_yes=check_p_yes,
            unseen_terms=unseen,
            terms=terms,
        )

    return answer


def cross_encoder_reranker(path: Path):  # noqa: ANN201 - an eval.runner.Reranker
    """A sentence-transformers cross-encoder from a local folder; nothing is downloaded."""
    quiet_offline_libraries()
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), local_files_only=True)

    def rerank(question: str, chunks: list[RetrievedChunk]) -> list[RetrievedChunk]:
        if not chunks:
            return chunks
        scores = model.predict([(question, c.text) for c in chunks])
        order = sorted(range(len(chunks)), key=lambda i: -float(scores[i]))
        return [chunks[i].model_copy(update={"score": float(scores[i])}) for i in order]

    return rerank


@contextmanager
def eval_runtime(settings: Settings) -> Iterator[Runtime]:
    """The data dir's runtime, for this process alone: an evaluation does not share it with a server."""
    lock = DataDirLock(Path(settings.data_dir))
    if not lock.try_acquire():
        raise StoreBusy(
            f"data dir {settings.data_dir} is in use (a running `ragsvc serve` or another command); "
            "ragsvc eval needs it to itself: stop the server or wait for the command to end"
        )
    runtime = open_runtime(settings, lock)
    try:
        yield runtime
    finally:
        runtime.close()
