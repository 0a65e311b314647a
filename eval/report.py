"""Turn a run's records into a report: JSON for machines, Markdown and one self-contained HTML page for people.

The HTML page carries its plots inline as SVG (matplotlib), so it can be mailed or attached to a CI job.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.metrics import RETRIEVAL_METRICS, mean, percentile, retrieval_metrics
from eval.questions import Question
from eval.runner import AnswerRecord, RetrievalRecord, RunConfig, RunStore

ANSWER_METRICS = (
    "must_contain",
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
JUDGE_METHOD = (
    "Faithfulness: each distinct sentence of an answer is put to the judge ({judge}) as a yes/no question "
    "against the chunks it cites (all retrieved chunks when it cites none). A claim is supported when "
    "P(yes) / (P(yes) + P(no)) for the first token of the judge's reply, read from the endpoint's logprobs "
    "with every spelling of yes and no summed, is above 0.5; where the endpoint gives no logprobs, when the "
    "reply's first word is yes. faithfulness is the share of supported claims, averaged over answers; "
    "faithfulness_p_yes is the mean of that probability. Refusals are not judged."
)
# Measured on the hand-labelled claims of tests/test_judge.py (SUPPORTED_AND_NOT) with the bundled llama-server.
SMOLLM2_CAVEAT = (
    "Caveat: the judge is SmolLM2-135M, and it cannot judge. On 20 hand-labelled claims (10 supported, 10 "
    "not) against real chunks of ragsvc's docs it was right on 10, in each of two runs (accuracy 0.50; ROC "
    "AUC 0.50 and 0.56: chance); "
    "its P(yes) sits near 0.33 whatever the claim, so nearly every claim counts as unsupported. Read "
    "faithfulness here as a figure the pipeline produced, not a measurement of the answers; pass "
    "--judge-url and --judge-model to judge with a larger model."
)


# Where an answer was lost, in pipeline order; "ok" when nothing was.
STAGES = ("retrieval", "refusal", "fact", "citation", "judge", "ok")
STAGE_MEANING = {
    "retrieval": "no gold page among the chunks the answer was given",
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


def judge_agreement(labels_file: Path, answers: dict[str, AnswerRecord]) -> dict[str, Any]:
    """The judge's verdicts against hand labels: JSONL lines {"key", "answer", "faithful": true/false}. An
    answer counts as judged faithful when every claim the judge read was supported. A label whose answer
    text is not the run's (the run was redone since) counts as not judged, as does a refused answer."""
    pairs: list[tuple[bool, bool]] = []
    not_judged = 0
    labelled = 0
    for line in labels_file.read_text().splitlines():
        if not line.strip():
            continue
        label = json.loads(line)
        labelled += 1
        answer = answers.get(label["key"])
        if answer is None or answer.answer != label["answer"] or answer.faithfulness is None:
            not_judged += 1
            continue
        pairs.append((answer.faithfulness == 1, bool(label["faithful"])))
    agree = sum(judged == labelled_as for judged, labelled_as in pairs)
    return {
        "labels_file": labels_file.name,
        "labelled": labelled,
        "compared": len(pairs),
        "agree": agree,
        "accuracy": agree / len(pairs) if pairs else None,
        "both_faithful": sum(j and lab for j, lab in pairs),
        "both_unfaithful": sum(not j and not lab for j, lab in pairs),
        "judge_only_faithful": sum(j and not lab for j, lab in pairs),
        "label_only_faithful": sum(lab and not j for j, lab in pairs),
        "not_judged": not_judged,
    }


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


def judge_note(config: RunConfig) -> str:
    """How faithfulness was judged, and what the figure is worth with the judge used."""
    if not config.judge:
        return "Faithfulness was not judged (--no-judge)."
    note = JUDGE_METHOD.format(judge=config.judge)
    return f"{note} {SMOLLM2_CAVEAT}" if "smollm2" in config.judge.lower() else note


def lower_is_better(metric: str) -> bool:
    return any(marker in metric for marker in LOWER_IS_BETTER)


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if metric.endswith("_ms") else f"{value:.3f}"


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
        "| mode | " + " | ".join(RETRIEVAL_METRICS) + " | context must_contain |",
        "|---" * (len(RETRIEVAL_METRICS) + 2) + "|",
    ]
    for mode, m in report["retrieval"].items():
        cells = [_fmt(m[name]) for name in RETRIEVAL_METRICS] + [_fmt(m["context_must_contain"])]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    if report["answers"]:
        a = report["answers"]
        lines += [
            "",
            f"## Answers ({config['answer_mode']} retrieval)",
            "",
            "| " + " | ".join(ANSWER_METRICS) + " |",
            "|---" * len(ANSWER_METRICS) + "|",
            "| " + " | ".join(_fmt(a.get(name)) for name in ANSWER_METRICS) + " |",
        ]
        if a["judge_unclear"]:
            lines.append(f"\nThe judge gave no clear verdict on {a['judge_unclear']} claims.")
        if a.get("refused_by_retrieval"):
            lines.append(f"\nRefusals because retrieval found nothing: {a['refused_by_retrieval']}.")
        if report.get("judge_note"):
            lines.append(f"\n{report['judge_note']}")
        lines += _markdown_counts(a)
    lines += ["", "## Latency", "", "| stage | p50 ms | p95 ms |", "|---|---|---|"]
    for stage, figures in report["latency"].items():
        lines.append(f"| {stage} | {_fmt(figures['p50_ms'], '_ms')} | {_fmt(figures['p95_ms'], '_ms')} |")
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
            f"{agreement['agree']} (accuracy {_fmt(agreement['accuracy'])}); judged faithful and labelled "
            f"faithful {agreement['both_faithful']}, judged unfaithful and labelled unfaithful "
            f"{agreement['both_unfaithful']}, judged faithful but labelled unfaithful "
            f"{agreement['judge_only_faithful']}, judged unfaithful but labelled faithful "
            f"{agreement['label_only_faithful']}; {agreement['not_judged']} labelled answers were not judged.",
        ]
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
        "| question | lost at | gold rank | refused | must_contain | citations | faithful | answer | cited |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {stage: i for i, stage in enumerate(STAGES)}
    rows = [row for row in report["per_question"] if row.get("answer")]
    for row in sorted(rows, key=lambda r: order.get(r["lost_at"], len(order))):
        a = row["answer"]
        cited = ", ".join(dict.fromkeys(s["source"] for s in a["sources"][:3]))
        lines.append(
            f"| {row['key']}: {_short(row['question'], 90)} | {row['lost_at']} | {row.get('gold_rank') or '–'} "
            f"| {'yes' if a['refused'] else 'no'} | {_fmt(a['must_contain'])} | {_fmt(a['citation_correct'])} "
            f"| {_fmt(a['faithfulness'])} | {_short(a['answer'])} | {cited} |"
        )
    return lines


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inside HTML


def plots(report: dict[str, Any]) -> dict[str, str]:
    """Inline SVGs: metrics per mode, and latency histograms per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out: dict[str, str] = {}
    modes = list(report["retrieval"])
    if modes:
        names = [*RETRIEVAL_METRICS]
        figure, axes = plt.subplots(figsize=(8, 3.2))
        width = 0.8 / len(modes)
        for i, mode in enumerate(modes):
            values = [report["retrieval"][mode][n] or 0 for n in names]
            axes.bar([x + i * width for x in range(len(names))], values, width, label=mode)
        axes.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(names))], names)
        axes.set_ylim(0, 1.05)
        # outside the axes: inside, it hid the bars of the last metrics
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        axes.set_title("Retrieval metrics per mode")
        out["metrics"] = _svg(figure)
        plt.close(figure)

    samples: dict[str, list[float]] = {}
    for row in report["per_question"]:
        for mode, r in row["retrieval"].items():
            samples.setdefault(f"retrieve · {mode}", []).append(r["latency_ms"])
        if row["answer"]:
            if row["answer"]["generate_ms"] is not None:
                samples.setdefault("generate", []).append(row["answer"]["generate_ms"])
            samples.setdefault("answer", []).append(row["answer"]["answer_ms"])
    if samples:
        retrieve = {k: v for k, v in samples.items() if k.startswith("retrieve")}
        answer = {k: v for k, v in samples.items() if not k.startswith("retrieve")}
        panels = [p for p in (retrieve, answer) if p]
        figure, axes_list = plt.subplots(1, len(panels), figsize=(8, 3), squeeze=False)
        for axes, panel in zip(axes_list[0], panels, strict=True):
            # One slow outlier (the first query loading the model, an LLM that rambled for two minutes) squeezed
            # every other bar into the first bin: the axis ends at twice the p95 and the outliers go in the
            # last bin, counted in the label.
            every = [x for v in panel.values() for x in v]
            limit = 2 * (percentile(every, 95) or 0) or max(every) or 1.0
            # answers take seconds: ms tick labels of six digits ran into each other
            unit, scale = ("s", 1000.0) if limit > 5000 else ("ms", 1.0)
            values = [[min(x, limit) / scale for x in v] for v in panel.values()]
            beyond = sum(x > limit for x in every)
            axes.hist(values, bins=20, range=(0, limit / scale), label=list(panel), alpha=0.8)
            axes.xaxis.set_major_locator(MaxNLocator(nbins=5))
            axes.set_xlabel(f"{unit} ({beyond} slower shown in the last bin)" if beyond else unit)
            axes.legend(fontsize=8)
        figure.suptitle("Latency per stage")
        out["latency"] = _svg(figure)
        plt.close(figure)
    return out


HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>ragsvc eval · {{ config.collection }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; }
th, td { border: 1px solid #ddd; padding: .3rem .5rem; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.gold { color: #0a7a2f; font-weight: 600; } .miss { background: #fff1f0; }
.small { font-size: 12px; color: #555; } .lost { color: #b00020; }
.answer { max-width: 420px; white-space: pre-wrap; }
/* a rambling answer would make its row screens tall: it scrolls inside its cell */
.answer .text { max-height: 16em; overflow-y: auto; }
table.questions { table-layout: fixed; width: 100%; } table.questions td { overflow-wrap: anywhere; }
.note { max-width: 900px; border-left: 3px solid #e0a800; padding-left: .6rem; }
details summary { cursor: pointer; } .plots svg { max-width: 100%; height: auto; }
</style></head><body>
<h1>Evaluation of <code>{{ config.collection }}</code></h1>
<p>{{ questions.total }} questions from <code>{{ config.questions_file }}</code>
({{ questions.answerable }} answerable, {{ questions.unanswerable }} unanswerable);
{{ config.top_k }} chunks retrieved per question; run at {{ created_at }}.</p>
<h2>Retrieval (page level)</h2>
<table><tr><th>mode</th>{% for n in metric_names %}<th>{{ n }}</th>{% endfor %}<th>context must_contain</th></tr>
{% for mode, m in retrieval.items() %}<tr><th>{{ mode }}</th>
{% for n in metric_names %}<td class="num">{{ fmt(m[n]) }}</td>{% endfor %}
<td class="num">{{ fmt(m.context_must_contain) }}</td></tr>{% endfor %}</table>
{% if answers %}<h2>Answers ({{ config.answer_mode }} retrieval)</h2>
<table><tr>{% for n in answer_names %}<th>{{ n }}</th>{% endfor %}</tr>
<tr>{% for n in answer_names %}<td class="num">{{ fmt(answers.get(n)) }}</td>{% endfor %}</tr></table>
{% if answers.judge_unclear %}<p class="small">The judge gave no clear verdict on {{ answers.judge_unclear }} claims.</p>{% endif %}
{% if answers.get("refused_by_retrieval") %}<p class="small">Refusals because retrieval found nothing: {{ answers.refused_by_retrieval }}.</p>{% endif %}
{% if judge_note %}<p class="small note">{{ judge_note }}</p>{% endif %}
{% if answers.get("counts") %}<table><tr><th>count</th><th>hits / of</th></tr>
{% for name, c in answers.counts.items() %}<tr><th>{{ name }}</th><td class="num">{{ c[0] }} / {{ c[1] }}</td></tr>{% endfor %}</table>{% endif %}
{% if answers.get("judge_agreement") %}{% set j = answers.judge_agreement %}<p class="note">Judge against
{{ j.labelled }} hand-labelled answers ({{ j.labels_file }}): agrees on {{ j.agree }} (accuracy {{ fmt(j.accuracy) }});
faithful by both {{ j.both_faithful }}, unfaithful by both {{ j.both_unfaithful }}, faithful by the judge only
{{ j.judge_only_faithful }}, by the label only {{ j.label_only_faithful }}; not judged {{ j.not_judged }}.</p>{% endif %}
{% if answers.get("lost_at") %}<h2>Where answers were lost</h2>
<table><tr><th>stage</th><th>answers</th><th>meaning</th></tr>
{% for stage in stages %}<tr><th>{{ stage }}</th><td class="num">{{ answers.lost_at.get(stage, 0) }}</td>
<td class="small">{{ stage_meaning[stage] }}</td></tr>{% endfor %}</table>{% endif %}
{% endif %}
<h2>Latency</h2>
<table><tr><th>stage</th><th>p50 ms</th><th>p95 ms</th><th>n</th></tr>
{% for stage, f in latency.items() %}<tr><th>{{ stage }}</th><td class="num">{{ fmt(f.p50_ms, "_ms") }}</td>
<td class="num">{{ fmt(f.p95_ms, "_ms") }}</td><td class="num">{{ f.count }}</td></tr>{% endfor %}</table>
<div class="plots">{% for svg in plots.values() %}{{ svg | safe }}{% endfor %}</div>
<h2>Questions</h2>
<table class="questions"><tr><th>question</th><th>gold</th>{% for mode in retrieval %}<th>{{ mode }}</th>{% endfor %}
{% if answers %}<th>answer</th>{% endif %}</tr>
{% for row in per_question %}<tr>
<td>{{ row.question }}<div class="small">{{ row.key }} · {{ row.kind }}{% if row.get("lost_at") %} ·
<b class="{{ 'gold' if row.lost_at == 'ok' else 'lost' }}">{{ 'answered' if row.lost_at == 'ok' else 'lost at ' + row.lost_at }}</b>
{% if row.get("gold_rank") %} · gold rank {{ row.gold_rank }}{% endif %}{% endif %}</div></td>
<td class="small">{% for g in row.gold %}{{ g }}<br>{% else %}<em>unanswerable</em>{% endfor %}</td>
{% for mode in retrieval %}{% set r = row.retrieval.get(mode) %}
<td class="small{% if r and r.metrics and r.metrics['hit@5'] == 0 %} miss{% endif %}">{% if r %}
{% if r.metrics %}RR {{ fmt(r.metrics['mrr@10']) }} · nDCG {{ fmt(r.metrics['ndcg@10']) }}<br>{% endif %}
<ol>{% for p in r.pages[:5] %}<li{% if p in row.gold %} class="gold"{% endif %}>{{ p }}</li>{% endfor %}</ol>
<details><summary>chunks</summary>{% for c in r.chunks %}<p><b>{{ c.source }}</b> · {{ c.section }}
({{ '%.3f' % c.score }})<br>{{ c.text }}</p>{% endfor %}</details>{% endif %}</td>{% endfor %}
{% if answers %}<td class="answer">{% if row.answer %}<div class="text">{{ row.answer.answer }}</div>
<div class="small">{% for s in row.answer.sources %}[{{ loop.index }}] <span{% if s.source in row.gold %} class="gold"{% endif %}>{{ s.source }}</span><br>{% endfor %}
F1 {{ fmt(row.answer.token_f1) }} · must_contain {{ fmt(row.answer.must_contain) }} ·
citations {{ fmt(row.answer.citation_correct) }} · faithful {{ fmt(row.answer.faithfulness) }}
{% if row.answer.get("faithfulness_p_yes") is not none %}(P(yes) {{ fmt(row.answer.faithfulness_p_yes) }}){% endif %}
{% if row.answer.refused %}· <b>refused</b>{% if row.answer.get("refused_by") == "retrieval" %} (nothing retrieved){% endif %}{% endif %}</div>{% if row.gold_answer %}
<details><summary>gold answer</summary>{{ row.gold_answer }}</details>{% endif %}{% endif %}</td>{% endif %}
</tr>{% endfor %}</table>
</body></html>
"""


def to_html(report: dict[str, Any]) -> str:
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(HTML_TEMPLATE)
    return template.render(
        **report,
        plots=plots(report),
        metric_names=RETRIEVAL_METRICS,
        answer_names=ANSWER_METRICS,
        stages=STAGES,
        stage_meaning=STAGE_MEANING,
        fmt=_fmt,
    )


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(to_markdown(report))
    paths["html"].write_text(to_html(report))
    return paths
