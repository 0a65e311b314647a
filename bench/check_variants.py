"""Would the answer check tell uncovered questions better with fewer sources, or against the question's own lean
to yes? Per question it asks the LLM of RAGSVC_LLM_BASE_URL the check on the answer's prompt (P(yes)), on its
first k sources only (k = 4..1: prefixes of that prompt, read from the prompt cache) and on no sources ("the
question's lean"). It prints each variant's AUC and what it would refuse alone and on top of the default check.

Usage: python bench/check_variants.py QUESTIONS.jsonl --data-dir DIR --out ROWS.jsonl
       python bench/check_variants.py --rows ROWS.jsonl [ROWS.jsonl ...]   (the table again, no LLM)
The collection is "bench" in DIR, made by `bench/retrieval.py DOCS QUESTIONS --data-dir DIR`; a run resumes
from the rows it wrote.
"""

# ruff: noqa: E402 - sys.path is fixed before the project's imports

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from eval.check_bars import auc, refused_by_check, some_unseen
from eval.questions import load_questions
from ragsvc.answer import format_source, prepare
from ragsvc.answer_check import CHECK_CUE
from ragsvc.llm import chat_message
from ragsvc.service.factory import open_runtime
from ragsvc.service.retrieval import unseen_terms
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings

NO_SOURCES = "(no sources were found)"


def probe(runtime: Runtime, question: str) -> dict[str, Any]:
    """The check's P(yes) on the answer's prompt, on its first k sources (largest k first, so each prompt
    shares all but its question with the one before) and on none."""
    prompt = prepare(runtime, "bench", question)
    system, ask = prompt.messages[0], f"\n\nQuestion: {question}{CHECK_CUE}"
    asked = lambda body: runtime.llm.yes_probability([system, chat_message("user", body + ask)])[1]  # noqa: E731
    by_count = {len(prompt.sources): prompt.supported}
    for k in range(len(prompt.sources) - 1, 0, -1):
        by_count[k] = asked(
            "Sources:\n\n" + "\n\n".join(format_source(i, s) for i, s in enumerate(prompt.sources[:k], 1))
        )
    unseen, terms = unseen_terms(runtime, "bench", question)
    return {
        "p_yes": by_count,
        "p_yes_no_sources": asked("Sources:\n\n" + NO_SOURCES),
        "unseen_terms": unseen,
        "terms": terms,
    }


def logit(p: float | None) -> float:
    p = min(max(p or 0.0, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def checked(row: dict[str, Any]) -> float | None:
    """The check's own P(yes): the one asked on the most sources, the answer's whole prompt."""
    return row["p_yes"][str(max(map(int, row["p_yes"])))]


def variants(row: dict[str, Any]) -> dict[str, float]:
    """Each variant as a score that is higher for an answerable question."""
    by_count = {int(k): p or 0.0 for k, p in row["p_yes"].items()}
    whole = checked(row) or 0.0
    return {
        "P(yes), all sources (the check)": whole,
        "its log-odds less the question's lean": logit(whole) - logit(row["p_yes_no_sources"]),
        "P(yes), the first source only": by_count.get(1, whole),
        "the higher of the first one and two": max(by_count.get(2, whole), by_count.get(1, whole)),
        "the lowest over k sources": min(by_count.values()),
        "the mean log-odds over k": sum(map(logit, by_count.values())) / len(by_count),
    }


def best_counts(answerable: list[float], uncovered: list[float], extras: range) -> str:
    """For each number of answerable questions allowed below the cut, the most uncovered ones below it."""
    cuts = [float("-inf"), *sorted(set(answerable + uncovered))]
    counts = [(sum(v <= c for v in answerable), sum(v <= c for v in uncovered)) for c in cuts]
    return " ".join(f"{e}:{max(right for wrong, right in counts if wrong <= e)}" for e in extras)


def table(rows: list[dict[str, Any]]) -> None:
    bars = Settings.model_fields
    low, high = bars["answer_check_threshold"].default, bars["answer_check_unseen_threshold"].default

    def passes(row: dict[str, Any]) -> bool:  # not refused by the check at the default bars
        return not refused_by_check(
            checked(row), low, high, lambda: some_unseen(row["unseen_terms"], row["terms"])
        )

    scored = [(r["answerable"], variants(r), passes(r)) for r in rows]
    answerable = sum(a for a, _, _ in scored)
    print(
        f"{answerable} answerable, {len(rows) - answerable} uncovered; the default check refuses "
        f"{sum(not a and not p for a, _, p in scored)} uncovered and {sum(a and not p for a, _, p in scored)} answerable"
    )
    print(
        "variant: AUC; alone, the most uncovered refused at 0..10 answerable; on top of the check, at +0..+5"
    )
    for name in variants(rows[0]):
        every = ([s[name] for a, s, _ in scored if a], [s[name] for a, s, _ in scored if not a])
        passed = ([s[name] for a, s, p in scored if a and p], [s[name] for a, s, p in scored if not a and p])
        area = auc(*every)
        print(
            f"  {name:40s} {'-' if area is None else f'{area:.3f}'}  alone {best_counts(*every, range(0, 11, 2))}"
            f"  on top {best_counts(*passed, range(6))}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("questions", type=Path, nargs="?")
    parser.add_argument("--data-dir", type=Path, help='holds bench/retrieval.py\'s collection "bench"')
    parser.add_argument("--out", type=Path, default=Path("check-variants.jsonl"), help="rows, appended")
    parser.add_argument("--rows", type=Path, nargs="*", default=[], help="tabulate these rows, no LLM")
    args = parser.parse_args()
    if args.questions:
        # the check on for every question, whatever the bars, so that each has its P(yes)
        runtime = open_runtime(Settings(data_dir=args.data_dir, answer_check_threshold=1e-4))
        probed = {json.loads(line)["key"] for line in args.out.open()} if args.out.exists() else set()
        with args.out.open("a") as out:
            for q in (q for q in load_questions(args.questions) if q.key not in probed):
                row = {"key": q.key, "answerable": q.answerable, "question": q.question}
                out.write(json.dumps(row | probe(runtime, q.question)) + "\n")
                out.flush()  # a broken run resumes after the last question written
        runtime.close()
        args.rows.append(args.out)
    table([json.loads(line) for path in args.rows for line in path.open()])


if __name__ == "__main__":
    main()
