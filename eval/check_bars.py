"""What the answer check would refuse at other bars: from each answer's P(yes) and its question's unseen terms,
how many uncovered questions each pair of bars refuses and how many answerable ones it wrongly refuses. Where
the bars sit depends on the LLM and on the documents (the 1.5B model's P(yes) told uncovered from answerable
questions with AUC 0.95 on fastapi-docs and 0.65 on gRPC's docs), so an operator sets them from such a table
over their own questions. Counts are the check's alone: the model's own refusals come on top."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eval.questions import Question
from eval.runner import AnswerRecord

BARS = (0.1, 0.2, 0.3, 0.4, 0.5)
UNSEEN_BARS = (0.5, 0.6, 0.7, 0.8)


def refused_by_check(
    p_yes: float | None, bar: float, unseen_bar: float | None, any_unseen: Callable[[], bool]
) -> bool:
    """The answer check's rule, ragsvc's own (ragsvc.answer_check.below_bar calls it): P(yes) under `bar`, or
    under `unseen_bar` where any of the question's terms appears in no chunk of the collection.
    `any_unseen` is asked only where the higher bar decides (ragsvc looks the terms up then)."""
    if p_yes is None:
        return False
    if p_yes < bar:
        return True
    return unseen_bar is not None and p_yes < unseen_bar and any_unseen()


def some_unseen(unseen: int | None, terms: int | None) -> bool:
    """Any of the question's terms unseen, all of them included: a question that shares no word with the docs
    ("How do I bake sourdough bread?") is the plainest case for the higher bar. Exempting it (as a question in
    another language than the docs') left the README's off-topic question to P(yes) 0.30 against the 0.3 bar,
    and 0.55 once code was fenced; none of the 474 questions of the seven sets here has all its terms unseen."""
    return unseen is not None and 0 < unseen <= (terms or 0)


def auc(answerable: Sequence[float], uncovered: Sequence[float]) -> float | None:
    """How often a score ranks an answerable question above an uncovered one (ties count half)."""
    pairs = [(a, u) for a in answerable for u in uncovered]
    return sum(1.0 if a > u else 0.5 if a == u else 0.0 for a, u in pairs) / len(pairs) if pairs else None


def refuses(answer: AnswerRecord, bar: float, unseen_bar: float | None) -> bool:
    return refused_by_check(
        answer.check_p_yes, bar, unseen_bar, lambda: some_unseen(answer.unseen_terms, answer.terms)
    )


def check_bars(questions: list[Question], answers: dict[str, AnswerRecord]) -> dict[str, Any] | None:
    """The table, and how well P(yes) ranks answerable above uncovered questions (AUC); None when no answer
    was checked (the check off, or an endpoint that gives no P(yes))."""
    checked = [
        (q, answers[q.key]) for q in questions if q.key in answers and answers[q.key].check_p_yes is not None
    ]
    answerable = [a for q, a in checked if q.answerable]
    uncovered = [a for q, a in checked if not q.answerable]
    if not checked:
        return None
    rows = []
    for bar in BARS:
        for unseen_bar in (None, *UNSEEN_BARS):
            if unseen_bar is not None and unseen_bar <= bar:
                continue
            rows.append(
                {
                    "bar": bar,
                    "unseen_bar": unseen_bar,
                    "uncovered_refused": [
                        sum(refuses(a, bar, unseen_bar) for a in uncovered),
                        len(uncovered),
                    ],
                    "answerable_refused": [
                        sum(refuses(a, bar, unseen_bar) for a in answerable),
                        len(answerable),
                    ],
                }
            )
    ranked = auc([a.check_p_yes for a in answerable], [a.check_p_yes for a in uncovered])
    return {"auc": ranked, "answerable": len(answerable), "uncovered": len(uncovered), "bars": rows}
