"""`ragsvc eval`: score retrieval and answers on a question set or a BEIR folder; compare two runs.

ragsvc is wired into eval's runner by ragsvc/eval_wiring.py (imported when a command runs). It opens the data
dir itself, so it does not run while `ragsvc serve` owns the same data dir.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from eval.beir import load_queries, write_corpus
from eval.compare import check_gates, compare, load_report, parse_gate, question_changes
from eval.judge import OpenAIJudge
from eval.metrics import RETRIEVAL_METRICS
from eval.questions import Question, fingerprint, load_questions
from eval.report import write_reports
from eval.runner import RERANKED, RunConfig, RunMismatch, RunStore, run_eval
from eval.summary import ANSWER_METRICS, summarize
from indexes.errors import RagsvcError
from ragsvc.cli_errors import UsageError, fail, reported
from ragsvc.cli_progress import ingest_progress_bar
from ragsvc.settings import Settings

if TYPE_CHECKING:
    from ragsvc.service.runtime import Runtime

GATES_FAILED = 3

eval_app = typer.Typer(help="Measure retrieval and answer quality; compare runs.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Modes = Annotated[
    str, typer.Option("--modes", help="comma-separated: dense, sparse, hybrid, reranked (needs --reranker)")
]
Out = Annotated[
    Path | None,
    typer.Option("--out", help="run folder: results, report.json/.md/.html; resumed if unfinished"),
]
Fresh = Annotated[bool, typer.Option("--fresh", help="start over even if --out holds an unfinished run")]
FailUnder = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-under",
        help=f"METRIC=VALUE, repeatable; exit {GATES_FAILED} when a metric is below it "
        "(hybrid.ndcg@10=0.8, or ndcg@10=0.8 for every mode, answers.token_f1=0.3)",
    ),
]
Reranker = Annotated[
    Path | None, typer.Option("--reranker", help="folder of a sentence-transformers cross-encoder model")
]

JudgeLabels = Annotated[
    Path | None,
    typer.Option(
        "--judge-labels",
        exists=True,
        help='JSONL of hand-labelled answers {"key", "answer", "faithful"}: the report says how often the '
        "judge agrees",
    ),
]


@contextmanager
def _progress_bar() -> Iterator[Any]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield advance


def _parse_modes(modes: str, reranker: Path | None) -> list[str]:
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in ("dense", "sparse", "hybrid", RERANKED)]
    if unknown or not chosen:
        fail(UsageError(f"unknown mode {', '.join(unknown) or modes!r}: use dense, sparse, hybrid"))
    if RERANKED in chosen and reranker is None:
        fail(
            UsageError(
                "the reranked mode needs --reranker PATH (a local cross-encoder model folder); "
                "no reranker model ships with ragsvc"
            )
        )
    return chosen


def _check_gate_syntax(gates: list[str]) -> None:
    with reported():
        for gate in gates:
            parse_gate(gate)


def _evaluate(
    runtime: Runtime,
    *,
    collection: str,
    questions: list[Question],
    questions_file: str,
    modes: list[str],
    top_k: int,
    answers: bool,
    answer_mode: str | None,
    judge: bool,
    judge_url: str | None,
    judge_model: str | None,
    reranker: Path | None,
    run_dir: Path,
    fresh: bool,
    judge_labels: Path | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    from ragsvc.eval_wiring import cross_encoder_reranker, runtime_answerer, runtime_retriever
    from ragsvc.service.access import LOCAL
    from ragsvc.service.collections import get_record

    settings = runtime.settings
    record = get_record(runtime, LOCAL, collection)
    target: dict[str, Any] = {
        "live_index": record.live_index,
        "updated_at": record.updated_at.isoformat(),
        "embedding_model": record.embedding.model,
    }
    judge_client = None
    if answers:
        target |= {
            "llm_model": settings.llm_model,
            "llm_context_window": settings.llm_context_window,
            "llm_max_tokens": settings.llm_max_tokens,
        }
        if judge:
            # the answering LLM's timeout: a judge on the same busy server is as slow as it
            judge_client = OpenAIJudge(
                judge_url or settings.llm_base_url,
                judge_model or settings.llm_model,
                settings.llm_api_key,
                timeout=settings.llm_timeout,
            )
    config = RunConfig(
        collection=collection,
        questions_file=questions_file,
        questions_fingerprint=fingerprint(questions),
        target=target,
        modes=modes,
        top_k=top_k,
        answers=answers,
        answer_mode=(answer_mode or settings.search_mode) if answers else None,
        judge=f"{judge_client.model} at {judge_client.base_url}" if judge_client else None,
        only=only,
    )
    store = RunStore(run_dir)
    resumed = store.open(config, fresh=fresh)
    if resumed:
        err.print(f"resuming the unfinished run in {run_dir}: {resumed} results already done")
    try:
        with _progress_bar() as advance:
            run_eval(
                questions,
                config,
                store,
                retriever=runtime_retriever(runtime, collection),
                answerer=runtime_answerer(runtime, collection, config.answer_mode) if answers else None,
                judge=judge_client,
                reranker=cross_encoder_reranker(reranker) if reranker else None,
                progress=advance,
            )
    finally:
        if judge_client:
            judge_client.close()
    report = summarize(store, questions, config, judge_labels=judge_labels)
    paths = write_reports(report, run_dir)
    store.finish(config)
    err.print(f"reports: {paths['json']}, {paths['markdown']}, {paths['html']}", highlight=False)
    return report


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _print_summary(report: dict[str, Any]) -> None:
    table = Table(title="retrieval (page level)")
    table.add_column("mode")
    for name in (*RETRIEVAL_METRICS, "p50 ms"):
        table.add_column(name, justify="right")
    for mode, m in report["retrieval"].items():
        p50 = report["latency"][f"retrieve.{mode}"]["p50_ms"]
        table.add_row(mode, *(_fmt(m[n]) for n in RETRIEVAL_METRICS), f"{p50:.1f}" if p50 else "–")
    out.print(table)
    if report["answers"]:
        answers = Table(title=f"answers ({report['config']['answer_mode']} retrieval)")
        for name in (*ANSWER_METRICS, "generate p50/p95 ms"):
            answers.add_column(name, justify="right")
        generate = report["latency"].get("generate", {})
        timing = (
            f"{generate['p50_ms']:.0f} / {generate['p95_ms']:.0f}"
            if generate.get("p50_ms") is not None
            else "–"
        )
        answers.add_row(*(_fmt(report["answers"][n]) for n in ANSWER_METRICS), timing)
        out.print(answers)


def _gate(report: dict[str, Any], gates: list[str]) -> None:
    with reported():
        failures = check_gates(report, gates)
    for failure in failures:
        err.print(
            f"[red]below --fail-under:[/red] {failure.metric} = {failure.value:.3f} < {failure.threshold}",
            highlight=False,
        )
    if failures:
        raise typer.Exit(GATES_FAILED)


@eval_app.command("run")
def run(
    collection: Annotated[str, typer.Option("--collection", "-c", help="collection to evaluate")],
    questions: Annotated[Path, typer.Option("--questions", "-q", help="JSONL question set", exists=True)],
    modes: Modes = "dense,sparse,hybrid",
    answers: Annotated[
        bool, typer.Option("--answers/--no-answers", help="also generate and score answers")
    ] = False,
    answer_mode: Annotated[
        str | None, typer.Option(help="search mode for answers; default the setting")
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", min=1, max=100, help="chunks retrieved per question")
    ] = 10,
    judge: Annotated[
        bool, typer.Option("--judge/--no-judge", help="LLM-judged faithfulness of answers")
    ] = True,
    judge_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible base URL; default the LLM's")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="judge model name; default the LLM's")] = None,
    reranker: Reranker = None,
    out_dir: Out = None,
    fresh: Fresh = False,
    fail_under: FailUnder = None,
    judge_labels: JudgeLabels = None,
    only: Annotated[
        str | None,
        typer.Option("--only", help="ask only the questions whose id starts with this (fa-test-: held out)"),
    ] = None,
) -> None:
    """Score a collection on a question set: retrieval per mode, and answers with --answers."""
    chosen = _parse_modes(modes, reranker)
    gates = fail_under or []
    _check_gate_syntax(gates)
    run_dir = out_dir or Path("eval-runs") / f"{collection}-{questions.stem}"
    from ragsvc.eval_wiring import eval_runtime

    with reported():
        question_set = load_questions(questions)
        if only:
            question_set = [q for q in question_set if q.key.startswith(only)]
            if not question_set:
                raise UsageError(f"no question id starts with {only!r} in {questions}")
        with eval_runtime(Settings()) as runtime:
            report = _evaluate(
                runtime,
                collection=collection,
                questions=question_set,
                questions_file=str(questions),
                modes=chosen,
                top_k=top_k,
                answers=answers,
                answer_mode=answer_mode,
                judge=judge,
                judge_url=judge_url,
                judge_model=judge_model,
                reranker=reranker,
                run_dir=run_dir,
                fresh=fresh,
            )
    _print_summary(report)
    _gate(report, gates)


@eval_app.command("report")
def report_again(
    run_dir: Annotated[Path, typer.Argument(help="a run folder of `ragsvc eval run`", exists=True)],
    questions: Annotated[
        Path | None, typer.Option("--questions", "-q", help="the run's question set; default its own path")
    ] = None,
    judge_labels: JudgeLabels = None,
) -> None:
    """Write a run's reports again from its stored results (finished or not), with nothing re-run."""
    with reported():
        store = RunStore(run_dir)
        config = store.read()
        question_set = load_questions(questions or Path(config.questions_file))
        if config.only:
            question_set = [q for q in question_set if q.key.startswith(config.only)]
        if fingerprint(question_set) != config.questions_fingerprint:
            raise RunMismatch(f"{run_dir} was run on another version of the question set")
        report = summarize(store, question_set, config, judge_labels=judge_labels)
        paths = write_reports(report, run_dir)
    err.print(f"reports: {paths['json']}, {paths['markdown']}, {paths['html']}", highlight=False)
    _print_summary(report)


@eval_app.command("beir")
def beir(
    folder: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")],
    modes: Modes = "dense,sparse,hybrid",
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="default: beir-FOLDER")] = None,
    split: Annotated[str, typer.Option(help="qrels split to score")] = "test",
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", min=10, max=200, help="chunks retrieved per query")
    ] = 30,
    reranker: Reranker = None,
    out_dir: Out = None,
    fresh: Fresh = False,
    fail_under: FailUnder = None,
) -> None:
    """Ingest a BEIR corpus into a collection of its own and print nDCG@10 per mode side by side."""
    chosen = _parse_modes(modes, reranker)
    gates = fail_under or []
    _check_gate_syntax(gates)
    folder_name = folder.resolve().name
    name = collection or (folder_name if folder_name.startswith("beir") else f"beir-{folder_name}")
    run_dir = out_dir or Path("eval-runs") / name
    from ragsvc.eval_wiring import eval_runtime
    from ragsvc.service import ingestion
    from ragsvc.service.access import LOCAL

    with reported():
        queries = load_queries(folder, split)
        with eval_runtime(Settings()) as runtime:
            with tempfile.TemporaryDirectory(prefix="ragsvc-beir-") as corpus_dir:
                documents = write_corpus(folder, Path(corpus_dir))
                with ingest_progress_bar("ingesting corpus", err) as show:
                    summary = ingestion.ingest_folder(runtime, LOCAL, name, Path(corpus_dir), progress=show)
            if summary.failed:
                raise RagsvcError(
                    f"{len(summary.failed)} corpus documents failed to ingest: {summary.failed[0]}"
                )
            err.print(
                f"{name}: {documents} documents, {summary.chunks_total} chunks; {len(queries)} judged queries",
                highlight=False,
            )
            report = _evaluate(
                runtime,
                collection=name,
                questions=queries,
                questions_file=f"{folder} ({split})",
                modes=chosen,
                top_k=top_k,
                answers=False,
                answer_mode=None,
                judge=False,
                judge_url=None,
                judge_model=None,
                reranker=reranker,
                run_dir=run_dir,
                fresh=fresh,
            )
    table = Table(title=f"{name}: nDCG@10")
    for mode in report["retrieval"]:
        table.add_column(mode, justify="right")
    table.add_row(*(_fmt(m["ndcg@10"]) for m in report["retrieval"].values()))
    out.print(table)
    _print_summary(report)
    _gate(report, gates)


@eval_app.command("compare")
def compare_runs(
    before: Annotated[
        Path, typer.Argument(help="report.json (or its run folder) of the baseline", exists=True)
    ],
    after: Annotated[
        Path, typer.Argument(help="report.json (or its run folder) of the candidate", exists=True)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """The change in every metric from BEFORE to AFTER, and the questions that moved."""
    a, b = load_report(before), load_report(after)
    deltas = compare(a, b)
    changes = question_changes(a, b)
    if as_json:
        rows = [
            {
                "metric": d.metric,
                "before": d.before,
                "after": d.after,
                "delta": d.change,
                "verdict": d.verdict,
            }
            for d in deltas
        ]
        out.print_json(json.dumps({"metrics": rows, "questions": changes}))
        return
    table = Table(title=f"{before} → {after}")
    for column in ("metric", "before", "after", "Δ"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    colour = {"better": "green", "worse": "red", "same": "dim"}
    for d in deltas:
        digits = ".1f" if d.metric.endswith("_ms") else ".3f"
        shown = [("–" if v is None else format(v, digits)) for v in (d.before, d.after)]
        change = "–" if d.change is None else f"[{colour[d.verdict]}]{d.change:+{digits}}[/]"
        table.add_row(d.metric, *shown, change)
    out.print(table)
    for mode, moved in changes.items():
        out.print(
            f"[bold]{mode}[/bold] nDCG@10: {len(moved['improved'])} questions improved, "
            f"{len(moved['worsened'])} worsened",
            highlight=False,
        )
        for row in moved["worsened"][:5]:
            out.print(
                f"  [red]▼[/red] {row['question']} ({row['before']:.2f} → {row['after']:.2f})",
                highlight=False,
            )
