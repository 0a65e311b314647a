"""A report (eval.summary's dict) as one self-contained HTML page, its plots inline as SVG (matplotlib), so it
can be mailed or attached to a CI job; the figures are eval.summary's, shown as they are."""

from __future__ import annotations

import io
from typing import Any

from eval.metrics import RETRIEVAL_METRICS, percentile
from eval.summary import ANSWER_METRICS, STAGE_MEANING, STAGES, fmt


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
<table><tr><th>mode</th>{% for n in metric_names %}<th>{{ n }}</th>{% endfor %}<th>must_contain in these results</th></tr>
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
{% if answer_check %}<h2>The answer check at other bars</h2>
<p class="small">P(yes) ranks answerable above uncovered questions with AUC {{ fmt(answer_check.auc) }}
({{ answer_check.answerable }} answerable and {{ answer_check.uncovered }} uncovered questions checked). Refused by
the check alone (the model's own refusals come on top):</p>
<table><tr><th>P(yes) under</th><th>or, with an unseen term, under</th><th>uncovered refused</th><th>answerable refused</th></tr>
{% for r in answer_check.bars %}<tr><td class="num">{{ r.bar }}</td><td class="num">{{ "–" if r.unseen_bar is none else r.unseen_bar }}</td>
<td class="num">{{ r.uncovered_refused[0] }} / {{ r.uncovered_refused[1] }}</td>
<td class="num">{{ r.answerable_refused[0] }} / {{ r.answerable_refused[1] }}</td></tr>{% endfor %}</table>{% endif %}
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
{% if row.answer.get("check_p_yes") is not none %}· check P(yes) {{ fmt(row.answer.check_p_yes) }}{% endif %}
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
        fmt=fmt,
    )
