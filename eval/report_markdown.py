"""A report (eval.summary's dict) as Markdown: the headline tables, where answers were lost, and the misses at
5; not the per-question detail with chunks, which only the HTML page carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.metrics import RETRIEVAL_METRICS
from eval.summary import ANSWER_METRICS, STAGE_MEANING, STAGES, fmt


def to_markdown(report: dict[str, Any]) -> str:
    config = report["config"]
    counts = report["questions"]
    lines = [
        f"# Evaluation of `{config['collection']}` with `{Path(config['questions_file']).name}`",
        "",
        f"{counts['total']} questions ({counts['answerable']} answerable, {counts['unanswerable']} "
        f"unanswerable); {config['top_k']} chunks retrieved per question; {report['created_at']}.",
        "",
        "## Retrieval (page level)",
        "",
        "| mode | " + " | ".join(RETRIEVAL_METRICS) + " | must_contain in these results |",
        "|---" * (len(RETRIEVAL_METRICS) + 2) + "|",
    ]
    for mode, m in report["retrieval"].items():
        cells = [fmt(m[name]) for name in RETRIEVAL_METRICS] + [fmt(m["context_must_contain"])]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    if report["answers"]:
        a = report["answers"]
        lines += [
            "",
            f"## Answers ({config['answer_mode']} retrieval)",
            "",
            "| " + " | ".join(ANSWER_METRICS) + " |",
            "|---" * len(ANSWER_METRICS) + "|",
            "| " + " | ".join(fmt(a.get(name)) for name in ANSWER_METRICS) + " |",
        ]
        if a["judge_unclear"]:
            lines.append(f"\nThe judge gave no clear verdict on {a['judge_unclear']} claims.")
        if a.get("refused_by_retrieval"):
            lines.append(f"\nRefusals because retrieval found nothing: {a['refused_by_retrieval']}.")
        if report.get("judge_note"):
            lines.append(f"\n{report['judge_note']}")
        lines += _markdown_counts(a)
        lines += _markdown_check(report.get("answer_check"))
    lines += ["", "## Latency", "", "| stage | p50 ms | p95 ms |", "|---|---|---|"]
    for stage, figures in report["latency"].items():
        lines.append(f"| {stage} | {fmt(figures['p50_ms'], '_ms')} | {fmt(figures['p95_ms'], '_ms')} |")
    if report["answers"]:
        lines += _markdown_stages(report)
    misses = [
        (row, mode)
        for row in report["per_question"]
        for mode, r in row["retrieval"].items()
        if r["metrics"] and r["metrics"]["hit@5"] == 0
    ]
    if misses:
        lines += ["", "## Misses at 5", "", "| mode | question | gold | retrieved |", "|---|---|---|---|"]
        for row, mode in misses:
            got = ", ".join(row["retrieval"][mode]["pages"][:5])
            lines.append(f"| {mode} | {row['question']} | {', '.join(row['gold'])} | {got} |")
    return "\n".join(lines) + "\n"


def _markdown_counts(answers: dict[str, Any]) -> list[str]:
    counts = answers.get("counts") or {}
    lines = ["", "| count | hits / of |", "|---|---|"]
    lines += [f"| {name} | {hits} / {of} |" for name, (hits, of) in counts.items()]
    agreement = answers.get("judge_agreement")
    if agreement:
        lines += [
            "",
            f"Judge against {agreement['labelled']} hand-labelled answers ({agreement['labels_file']}): agrees on "
            f"{agreement['agree']} (accuracy {fmt(agreement['accuracy'])}); judged faithful and labelled "
            f"faithful {agreement['both_faithful']}, judged unfaithful and labelled unfaithful "
            f"{agreement['both_unfaithful']}, judged faithful but labelled unfaithful "
            f"{agreement['judge_only_faithful']}, judged unfaithful but labelled faithful "
            f"{agreement['label_only_faithful']}; {agreement['not_judged']} labelled answers were not judged.",
        ]
    return lines


def _markdown_check(check: dict[str, Any] | None) -> list[str]:
    if not check:
        return []
    lines = [
        "",
        "## The answer check at other bars",
        "",
        f"P(yes) ranks answerable above uncovered questions with AUC {fmt(check['auc'])} ({check['answerable']} "
        f"answerable and {check['uncovered']} uncovered questions checked). Refused by the check alone (the "
        "model's own refusals come on top):",
        "",
        "| P(yes) under | or, with an unseen term, under | uncovered refused | answerable refused |",
        "|---|---|---|---|",
    ]
    for row in check["bars"]:
        (hit, of), (wrong, out_of) = row["uncovered_refused"], row["answerable_refused"]
        unseen_bar = "–" if row["unseen_bar"] is None else row["unseen_bar"]
        lines.append(f"| {row['bar']} | {unseen_bar} | {hit} / {of} | {wrong} / {out_of} |")
    return lines


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _markdown_stages(report: dict[str, Any]) -> list[str]:
    """Per question, where its answer was lost: retrieval rank, answer, citations, verdicts."""
    lost = report["answers"].get("lost_at") or {}
    lines = ["", "## Where answers were lost", "", "| stage | answers | meaning |", "|---|---|---|"]
    lines += [f"| {stage} | {lost.get(stage, 0)} | {STAGE_MEANING[stage]} |" for stage in STAGES]
    lines += [
        "",
        "| question | lost at | gold rank | check P(yes) | refused | must_contain | citations | faithful | answer "
        "| cited |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {stage: i for i, stage in enumerate(STAGES)}
    rows = [row for row in report["per_question"] if row.get("answer")]
    for row in sorted(rows, key=lambda r: order.get(r["lost_at"], len(order))):
        a = row["answer"]
        cited = ", ".join(dict.fromkeys(s["source"] for s in a["sources"][:3]))
        lines.append(
            f"| {row['key']}: {_short(row['question'], 90)} | {row['lost_at']} | {row.get('gold_rank') or '–'} "
            f"| {fmt(a.get('check_p_yes'))} | {'yes' if a['refused'] else 'no'} | {fmt(a['must_contain'])} | {fmt(a['citation_correct'])} "
            f"| {fmt(a['faithfulness'])} | {_short(a['answer'])} | {cited} |"
        )
    return lines
