"""A run's records summed into its report, the dict saved as report.json: retrieval metrics per mode, answer
metrics, where each answer was lost, latencies and every question; its headline figures by name and how a
figure is written. Rendering the report is eval.report_markdown's and eval.report_html's work."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.check_bars import check_bars
from eval.judge_report import judge_agreement, judge_note
from eval.metrics import RETRIEVAL_METRICS, mean, percentile, retrieval_metrics
from eval.questions import Question
from eval.runner import AnswerRecord, RetrievalRecord, RunConfig, RunStore

ANSWER_METRICS = (
    "must_contain",
    "context_must_contain",
    "token_f1",
    "correct_refusal",
    "wrong_refusal",
    "citation_correct",
    "faithfulness",
    "faithfulness_p_yes",
)
# Counts that go with the answer metrics but are not scores (no gates, no deltas).
ANSWER_COUNTS = ("questions", "judge_unclear", "refused_by_retrieval", "lost_at", "counts", "judge_agreement")
# For these, lower is better (compare colours them the other way round).
LOWER_IS_BETTER = ("wrong_refusal", "_ms")
FORMAT_VERSION = 1

# Where an answer was lost, in pipeline order; "ok" when nothing was.
STAGES = ("retrieval", "context", "refusal", "fact", "citation", "judge", "ok")
STAGE_MEANING = {
    "retrieval": "no gold page among the chunks the answer was given",
    "context": "a gold page was given, but not the sections that hold the expected fact (must_contain)",
    "refusal": "refused an answerable question, or answered one the docs do not cover",
    "fact": "the expected fact (must_contain) is missing from the answer",
    "citation": "no citation, or a citation of a non-gold page",
    "judge": "the judge found a claim the cited text does not support",
    "ok": "nothing lost",
}


def lost_at(question: Question, answer: AnswerRecord | None) -> str | None:
    """The first stage of the pipeline that lost this question's answer (STAGES), None without an answer."""
    if answer is None:
        return None
    if not question.answerable:
        return "ok" if answer.refused else "refusal"
    if not {s.source for s in answer.sources} & set(question.sources):
        return "retrieval"
    if answer.context_must_contain is not None and answer.context_must_contain < 1:
        return "context"
    if answer.refused:
        return "refusal"
    if answer.must_contain is not None and answer.must_contain < 1:
        return "fact"
    if answer.citation_correct is None or answer.citation_correct < 1:
        return "citation"
    if answer.faithfulness is not None and answer.faithfulness < 1:
        return "judge"
    return "ok"


def _gold_rank(pages: list[str], gold: list[str]) -> int | None:
    return next((rank for rank, page in enumerate(pages, 1) if page in gold), None)


def _latency(values: list[float]) -> dict[str, float | None]:
    return {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95), "count": len(values)}


def summarize(
    store: RunStore, questions: list[Question], config: RunConfig, *, judge_labels: Path | None = None
) -> dict[str, Any]:
    """The report of a run: overall metrics per mode, answer metrics, latencies, and every question."""
    by_key = {q.key: q for q in questions}
    gold = {q.key: q.grades for q in questions}
    retrieval: dict[str, dict[str, Any]] = {}
    latency: dict[str, dict[str, float | None]] = {}
    per_mode_scores: dict[str, dict[str, dict[str, float]]] = {}
    for mode in config.modes:
        records = [r for r in store.records.values() if isinstance(r, RetrievalRecord) and r.mode == mode]
        records = [r for r in records if r.key in by_key]
        scores = retrieval_metrics({r.key: r.pages for r in records}, gold)
        per_mode_scores[mode] = scores
        summary: dict[str, Any] = {
            name: mean([s[name] for s in scores.values()]) for name in RETRIEVAL_METRICS
        }
        summary["context_must_contain"] = mean([r.context_must_contain for r in records])
        summary["questions"] = len(scores)
        retrieval[mode] = summary
        latency[f"retrieve.{mode}"] = _latency([r.latency_ms for r in records])

    answers_summary: dict[str, Any] | None = None
    answers = {r.key: r for r in store.records.values() if isinstance(r, AnswerRecord) and r.key in by_key}
    if answers:
        answerable = [a for a in answers.values() if by_key[a.key].answerable]
        unanswerable = [a for a in answers.values() if not by_key[a.key].answerable]
        answers_summary = {
            "must_contain": mean([a.must_contain for a in answerable]),
            "context_must_contain": mean([a.context_must_contain for a in answerable]),
            "token_f1": mean([a.token_f1 for a in answerable]),
            "correct_refusal": mean([float(a.refused) for a in unanswerable]),
            "wrong_refusal": mean([float(a.refused) for a in answerable]),
            "citation_correct": mean([a.citation_correct for a in answerable]),
            "faithfulness": mean([a.faithfulness for a in answers.values()]),
            "faithfulness_p_yes": mean([a.faithfulness_p_yes for a in answers.values()]),
            "judge_unclear": sum(a.judge_unclear for a in answers.values()),
            "refused_by_retrieval": sum(a.refused_by == "retrieval" for a in answers.values()),
            "questions": len(answers),
        }
        latency["generate"] = _latency([a.generate_ms for a in answers.values() if a.generate_ms is not None])
        latency["answer"] = _latency([a.answer_ms for a in answers.values()])

    per_question = []
    for q in questions:
        row: dict[str, Any] = {
            "key": q.key,
            "question": q.question,
            "kind": q.kind,
            "gold": q.sources,
            "gold_answer": q.answer,
            "retrieval": {},
        }
        for mode in config.modes:
            record = store.records.get(("retrieval", mode, q.key))
            if isinstance(record, RetrievalRecord):
                row["retrieval"][mode] = {
                    "pages": record.pages[:10],
                    "metrics": per_mode_scores[mode].get(q.key),
                    "latency_ms": record.latency_ms,
                    "chunks": [c.model_dump() for c in record.chunks],
                }
        answer = answers.get(q.key)
        row["answer"] = answer.model_dump(exclude={"stage", "key"}) if answer else None
        answered_from = store.records.get(("retrieval", config.answer_mode or "", q.key))
        row["gold_rank"] = (
            _gold_rank(answered_from.pages, q.sources) if isinstance(answered_from, RetrievalRecord) else None
        )
        row["lost_at"] = lost_at(q, answer)
        per_question.append(row)
    if answers_summary is not None:
        stages = [row["lost_at"] for row in per_question if row["lost_at"]]
        answers_summary["lost_at"] = {stage: stages.count(stage) for stage in STAGES}
        answers_summary["counts"] = _answer_counts(questions, answers)
        if judge_labels is not None:
            answers_summary["judge_agreement"] = judge_agreement(judge_labels, answers)

    return {
        "format": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.model_dump(),
        "questions": {
            "total": len(questions),
            "answerable": sum(q.answerable for q in questions),
            "unanswerable": sum(not q.answerable for q in questions),
        },
        "retrieval": retrieval,
        "answers": answers_summary,
        "judge_note": judge_note(config) if answers_summary else None,
        "answer_check": check_bars(questions, answers) if answers else None,
        "latency": latency,
        "per_question": per_question,
    }


def _answer_counts(questions: list[Question], answers: dict[str, AnswerRecord]) -> dict[str, list[int]]:
    """Each answer metric as [hits, out of], so a reader sees 25/33 rather than 0.758."""
    answerable = [answers[q.key] for q in questions if q.key in answers and q.answerable]
    unanswerable = [answers[q.key] for q in questions if q.key in answers and not q.answerable]
    with_facts = [a for a in answerable if a.must_contain is not None]
    cited = [a for a in answerable if a.citation_correct is not None]
    return {
        "must_contain": [sum(a.must_contain == 1 for a in with_facts), len(with_facts)],
        "context_must_contain": [
            sum(a.context_must_contain == 1 for a in with_facts if a.context_must_contain is not None),
            sum(a.context_must_contain is not None for a in with_facts),
        ],
        "correct_refusal": [sum(a.refused for a in unanswerable), len(unanswerable)],
        "wrong_refusal": [sum(a.refused for a in answerable), len(answerable)],
        "cited": [len(cited), len(answerable)],
        "citation_all_gold": [sum(a.citation_correct == 1 for a in cited), len(cited)],
        "uncovered_answered_with_citation": [
            sum(not a.refused and bool(re.search(r"\[\d+\]", a.answer)) for a in unanswerable),
            len(unanswerable),
        ],
    }


def flatten(report: dict[str, Any]) -> dict[str, float]:
    """Every headline figure under one name: `hybrid.ndcg@10`, `answers.token_f1`, `latency.generate.p95_ms`."""
    flat: dict[str, float] = {}
    for mode, metrics in report.get("retrieval", {}).items():
        for name, value in metrics.items():
            if name != "questions" and value is not None:
                flat[f"{mode}.{name}"] = value
    for name, value in (report.get("answers") or {}).items():
        if name not in ANSWER_COUNTS and value is not None:
            flat[f"answers.{name}"] = value
    for stage, figures in report.get("latency", {}).items():
        for name in ("p50_ms", "p95_ms"):
            if figures.get(name) is not None:
                flat[f"latency.{stage}.{name}"] = figures[name]
    return flat


def lower_is_better(metric: str) -> bool:
    return any(marker in metric for marker in LOWER_IS_BETTER)


def fmt(value: float | None, metric: str = "") -> str:
    """A figure as the report pages write it: milliseconds whole, scores to three places, a dash for none."""
    if value is None:
        return "–"
    return f"{value:.0f}" if metric.endswith("_ms") else f"{value:.3f}"
