"""Run a question set through retrieval (per mode) and, optionally, answering; each result is kept on disk
as soon as it is finished, so an interrupted run resumes where it stopped.

ragsvc's services come in as callables (Retriever, Reranker, Answerer, Judge): eval never imports them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from eval.judge import Verdicts
from eval.metrics import citation_correctness, contains_rate, is_refusal, rank_pages, token_f1
from eval.questions import Question
from indexes.errors import RagsvcError

RERANKED = "reranked"
# The reranker reorders this many hybrid candidates (or 3 × top_k, whichever is more).
RERANK_DEPTH = 30
SNIPPET_CHARS = 400

Progress = Callable[[str, int, int], None]


class RetrievedChunk(BaseModel):
    source: str
    section: str = ""
    score: float = 0.0
    text: str = ""


class GeneratedAnswer(BaseModel):
    text: str
    sources: list[RetrievedChunk]
    generate_ms: float | None = None
    check_p_yes: float | None = None  # the answer check's P(yes) that the sources answer it, where it ran
    unseen_terms: int | None = None  # of the question's BM25 terms, those no chunk of the collection holds
    terms: int | None = None


class Retriever(Protocol):
    def __call__(self, question: str, top_k: int, mode: str) -> list[RetrievedChunk]: ...


class Reranker(Protocol):
    def __call__(self, question: str, chunks: list[RetrievedChunk]) -> list[RetrievedChunk]: ...


class Answerer(Protocol):
    def __call__(self, question: str) -> GeneratedAnswer: ...


class Judge(Protocol):
    def faithfulness(self, answer: str, source_texts: Sequence[str]) -> Verdicts: ...


class RunMismatch(RagsvcError):
    code = "eval_run_mismatch"


class RunConfig(BaseModel):
    """What a run measures; resuming is only allowed onto a run with the same config."""

    collection: str
    questions_file: str
    questions_fingerprint: str
    target: dict[str, Any] = Field(default_factory=dict)  # what identifies the collection's current index
    modes: list[str]
    top_k: int
    answers: bool
    answer_mode: str | None = None
    judge: str | None = None
    only: str | None = None  # the questions whose id starts with this, when not the whole set


class RetrievalRecord(BaseModel):
    stage: Literal["retrieval"] = "retrieval"
    key: str
    mode: str
    pages: list[str]
    chunks: list[RetrievedChunk]
    latency_ms: float
    context_must_contain: float | None = None


class AnswerRecord(BaseModel):
    stage: Literal["answer"] = "answer"
    key: str
    answer: str
    sources: list[RetrievedChunk]
    answer_ms: float
    generate_ms: float | None = None
    must_contain: float | None = None
    # the share of must_contain in the text the LLM was given (its sources, or the closest pages of a
    # refusal): below 1, no prompt could have produced the fact
    context_must_contain: float | None = None
    token_f1: float | None = None
    refused: bool
    # "retrieval" when nothing was retrieved and ragsvc refused without asking the LLM; "answer" when the
    # answer's own words refuse
    refused_by: Literal["retrieval", "answer"] | None = None
    citation_correct: float | None = None
    faithfulness: float | None = None
    # the judge's mean P(yes) over the claims, where it gave logprobs
    faithfulness_p_yes: float | None = None
    judge_unclear: int = 0
    check_p_yes: float | None = None
    unseen_terms: int | None = None
    terms: int | None = None


Record = RetrievalRecord | AnswerRecord


class RunStore:
    """An out dir: run.json says what is being run and whether it finished; results.jsonl holds one finished
    record a line, appended and flushed to disk as each is done."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.config_path = out / "run.json"
        self.results_path = out / "results.jsonl"
        self.records: dict[tuple[str, str, str], Record] = {}

    def open(self, config: RunConfig, *, fresh: bool = False) -> int:
        """Start a run or resume the unfinished one with the same config; returns the records resumed."""
        self.out.mkdir(parents=True, exist_ok=True)
        previous = json.loads(self.config_path.read_text()) if self.config_path.exists() else None
        resumable = previous is not None and not fresh and not previous.get("finished")
        if resumable:
            before = RunConfig.model_validate(previous["config"])
            same = before.model_dump(exclude={"modes", "answers"}) == config.model_dump(
                exclude={"modes", "answers"}
            )
            if not same:
                raise RunMismatch(
                    f"{self.out} holds an unfinished run of another question set, collection state or "
                    "settings; pass --fresh to start over there, or choose another --out"
                )
            self._load()
        else:
            self.results_path.unlink(missing_ok=True)
        self._write_config(config, finished=False)
        return len(self.records)

    def read(self) -> RunConfig:
        """A run as it stands on disk, changing nothing: its config, and its records loaded."""
        if not self.config_path.exists():
            raise RunMismatch(f"{self.out} holds no run (no run.json)")
        config = RunConfig.model_validate(json.loads(self.config_path.read_text())["config"])
        if self.results_path.exists():
            for line in self.results_path.read_text().splitlines():
                if line.strip().endswith("}"):
                    self._add_loaded(json.loads(line))
        return config

    def _add_loaded(self, raw: dict[str, Any]) -> None:
        record: Record = (
            RetrievalRecord.model_validate(raw)
            if raw["stage"] == "retrieval"
            else AnswerRecord.model_validate(raw)
        )
        self.records[_key(record)] = record

    def _load(self) -> None:
        if not self.results_path.exists():
            return
        text = self.results_path.read_text()
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            # The last line was cut off mid-write by the interruption: that question is redone.
            lines = lines[:-1]
            self.results_path.write_text("".join(line + "\n" for line in lines))
        for line in lines:
            self._add_loaded(json.loads(line))

    def _write_config(self, config: RunConfig, *, finished: bool) -> None:
        body = {
            "config": config.model_dump(),
            "finished": finished,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2))
        os.replace(tmp, self.config_path)

    def has(self, stage: str, mode: str, key: str) -> bool:
        return (stage, mode, key) in self.records

    def add(self, record: Record) -> None:
        with self.results_path.open("a") as handle:
            handle.write(record.model_dump_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[_key(record)] = record

    def finish(self, config: RunConfig) -> None:
        self._write_config(config, finished=True)


def _key(record: Record) -> tuple[str, str, str]:
    mode = record.mode if isinstance(record, RetrievalRecord) else ""
    return (record.stage, mode, record.key)


def _snippet(chunk: RetrievedChunk) -> RetrievedChunk:
    return chunk.model_copy(update={"text": chunk.text[:SNIPPET_CHARS]})


def retrieve_once(
    question: Question, mode: str, top_k: int, retriever: Retriever, reranker: Reranker | None
) -> RetrievalRecord:
    started = time.perf_counter()
    if mode == RERANKED:
        if reranker is None:
            raise RunMismatch("the reranked mode needs a reranker (--reranker PATH to a cross-encoder model)")
        candidates = retriever(question.question, max(RERANK_DEPTH, 3 * top_k), "hybrid")
        chunks = reranker(question.question, candidates)[:top_k]
    else:
        chunks = retriever(question.question, top_k, mode)
    latency_ms = (time.perf_counter() - started) * 1000
    return RetrievalRecord(
        key=question.key,
        mode=mode,
        pages=rank_pages([c.source for c in chunks]),
        chunks=[_snippet(c) for c in chunks],
        latency_ms=latency_ms,
        context_must_contain=contains_rate(" ".join(c.text for c in chunks), question.must_contain),
    )


def answer_once(question: Question, answerer: Answerer, judge: Judge | None) -> AnswerRecord:
    started = time.perf_counter()
    generated = answerer(question.question)
    answer_ms = (time.perf_counter() - started) * 1000
    cited_sources = [s.source for s in generated.sources]
    # ragsvc answers without the LLM, and with no sources, when retrieval found nothing
    refused_by = "retrieval" if not generated.sources else "answer" if is_refusal(generated.text) else None
    refused = refused_by is not None
    verdicts = (
        judge.faithfulness(generated.text, [s.text for s in generated.sources])
        if judge is not None and not refused and generated.sources
        else None
    )
    return AnswerRecord(
        key=question.key,
        answer=generated.text,
        sources=[_snippet(s) for s in generated.sources],
        answer_ms=answer_ms,
        generate_ms=generated.generate_ms,
        must_contain=contains_rate(generated.text, question.must_contain),
        context_must_contain=contains_rate(" ".join(s.text for s in generated.sources), question.must_contain)
        if question.answerable
        else None,
        token_f1=token_f1(generated.text, question.answer) if question.answer else None,
        refused=refused,
        refused_by=refused_by,
        citation_correct=citation_correctness(generated.text, cited_sources, set(question.sources))
        if question.answerable
        else None,
        faithfulness=verdicts.score if verdicts else None,
        faithfulness_p_yes=verdicts.mean_p_yes if verdicts else None,
        judge_unclear=verdicts.unclear if verdicts else 0,
        check_p_yes=generated.check_p_yes,
        unseen_terms=generated.unseen_terms,
        terms=generated.terms,
    )


def run_eval(
    questions: list[Question],
    config: RunConfig,
    store: RunStore,
    *,
    retriever: Retriever,
    answerer: Answerer | None = None,
    judge: Judge | None = None,
    reranker: Reranker | None = None,
    progress: Progress | None = None,
) -> None:
    """Every (mode, question) retrieval and every answer not yet in the store; a failure stops the run with
    what finished kept, so running again resumes."""
    report = progress or (lambda label, done, total: None)
    for mode in config.modes:
        label = f"retrieval · {mode}"
        for done, question in enumerate(questions, 1):
            if not store.has("retrieval", mode, question.key):
                store.add(retrieve_once(question, mode, config.top_k, retriever, reranker))
            report(label, done, len(questions))
    if config.answers and answerer is not None:
        for done, question in enumerate(questions, 1):
            if not store.has("answer", "", question.key):
                store.add(answer_once(question, answerer, judge))
            report("answers", done, len(questions))
