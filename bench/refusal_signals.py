"""Could a signal other than the answer check's P(yes) tell an uncovered question from an answerable one? Per
question it asks the LLM of RAGSVC_LLM_BASE_URL for the check's P(yes); the answer itself with token logprobs; a
quote: "copy the one sentence of the sources that best answers the question", then "does that sentence answer
it?" (P(yes)); a short answer, once greedy and five times sampled; and P(yes) that each source, shown alone,
states the answer. It prints each signal's AUC and, among the questions the default check lets through, how many
uncovered ones each signal would refuse at the cost of 0-5 more wrong refusals of answerable ones.

Usage: python bench/refusal_signals.py QUESTIONS.jsonl --data-dir DIR [--docs FOLDER] [--out ROWS.jsonl]
       python bench/refusal_signals.py --rows ROWS.jsonl [ROWS.jsonl ...]   (the table again, no LLM)
The collection is "bench" in DIR (bench/retrieval.py's), ingested from FOLDER first when given. Rows saved
before a probe was added get that probe on the next run.
"""

# ruff: noqa: E402 - sys.path is fixed before the project's imports

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

# Run as a script, bench/ comes first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from eval.check_bars import auc, refused_by_check, some_unseen
from eval.metrics import normalize_tokens
from eval.questions import load_questions
from ragsvc.answer import ANSWER_CUE, prepare
from ragsvc.citations import CITATION
from ragsvc.llm import chat_message
from ragsvc.service import ingestion
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.service.retrieval import unseen_terms
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings

QUOTE_CUE = (
    "\nCopy, word for word, the one sentence from the numbered sources above that best answers this question."
)
JUDGE = "Does that sentence answer the question? Reply with YES or NO only."
SHORT_CUE = "\nAnswer in a few words only, taken from the sources above:"
# Short answers sampled at temperature 1: an invented fact changes between samples, a copied one less.
SAMPLES = 5
PASSAGE = (
    "Passage:\n{passage}\n\nQuestion: {question}\n\n"
    "Does the passage above state the answer to this question? Reply with YES or NO only."
)
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")
SIGNALS = ("check P(yes)", "answer mean logprob", "answer words in sources", "answer numbers not in sources",
           "quote 3-grams in sources", "quote judged P(yes)", "short answer words in sources",
           "short answers agree", "best passage P(yes)")  # fmt: skip


def probe(runtime: Runtime, question: str) -> dict[str, Any]:
    """One question's signals, from its answer's own prompt (the check's P(yes) computed whatever the bars)."""
    prompt = prepare(runtime, "bench", question)
    unseen, terms = unseen_terms(runtime, "bench", question)
    client, llm = runtime.llm._client, runtime.llm  # noqa: SLF001 - logprobs of a whole answer: a probe's need
    request = llm._request(prompt.messages, prompt.max_tokens)  # noqa: SLF001
    reply = client.chat.completions.create(**request, logprobs=True).choices[0]
    logprobs = [t.logprob for t in (reply.logprobs.content or []) if not CITATION.fullmatch(t.token.strip())]
    context, asked = prompt.messages[:-1], (prompt.messages[-1].content or "").removesuffix(ANSWER_CUE)
    quoting = [*context, chat_message("user", asked + QUOTE_CUE)]
    quote = llm.chat(quoting, max_tokens=96).text
    _, judged = llm.yes_probability([*quoting, chat_message("assistant", quote), chat_message("user", JUDGE)])
    shortly = [*context, chat_message("user", asked + SHORT_CUE)]
    short = llm.chat(shortly, max_tokens=24).text
    sampled = [llm._request(shortly, 24) | {"temperature": 1.0, "seed": seed} for seed in range(SAMPLES)]  # noqa: SLF001
    samples = [client.chat.completions.create(**r).choices[0].message.content or "" for r in sampled]
    return {
        "check_p_yes": prompt.supported,
        "unseen_terms": unseen,
        "terms": terms,
        "answer": reply.message.content or "",
        "answer_logprob": statistics.mean(logprobs) if logprobs else 0.0,
        "quote": quote,
        "quote_p_yes": judged,
        "short_answer": short,
        "samples": samples,
        "sources": [source.text for source in prompt.sources],
    }


def judge_passages(runtime: Runtime, question: str, sources: list[str]) -> list[float | None]:
    """P(yes) that each source, shown alone, states the answer: a short passage may be judged better than
    the answer's whole prompt (each is a new prompt, so this one is not served from the prompt cache)."""
    asked = lambda text: chat_message("user", PASSAGE.format(passage=text, question=question))  # noqa: E731
    return [runtime.llm.yes_probability([asked(text)])[1] for text in sources]


def content_words(text: str) -> list[str]:
    """The words of a reply, citations dropped, less those of one or two letters."""
    return [w for w in normalize_tokens(CITATION.sub("", text)) if len(w) > 2]


def share_in(words: list[str], known: set[str]) -> float:
    """The share of words found in known (1 when there are none)."""
    return sum(w in known for w in words) / len(words) if words else 1.0


def agreement(replies: list[set[str]]) -> float:
    """Mean Jaccard similarity of the replies' word sets, over every pair."""
    pairs = [(a, b) for i, a in enumerate(replies) for b in replies[i + 1 :]]
    return statistics.mean(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) if pairs else 1.0


def trigrams(tokens: list[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def signals(row: dict[str, Any]) -> dict[str, float]:
    """Each signal as a score that is higher for an answerable question."""
    sources = " ".join(row["sources"]).lower()
    source_tokens = normalize_tokens(sources)
    source_words = set(source_tokens) | set(normalize_tokens(row["question"]))
    answer = CITATION.sub("", row["answer"])
    words = content_words(row["answer"])
    grams, source_grams = trigrams(normalize_tokens(CITATION.sub("", row["quote"]))), trigrams(source_tokens)
    return dict(
        zip(
            SIGNALS,
            (
                row["check_p_yes"] or 0.0,
                row["answer_logprob"],
                share_in(words, source_words),
                -sum(n not in sources and n not in row["question"] for n in NUMBER.findall(answer)),
                len(grams & source_grams) / len(grams) if grams else 0.0,
                row["quote_p_yes"] or 0.0,
                share_in(content_words(row["short_answer"]), source_words),
                agreement([set(content_words(sample)) for sample in row["samples"]]),
                max((p or 0.0 for p in row["passage_p_yes"]), default=0.0),
            ),
            strict=True,
        )
    )


def passes_check(row: dict[str, Any]) -> bool:
    """Not refused by the answer check at the default bars."""
    bars = Settings.model_fields
    low, high = bars["answer_check_threshold"].default, bars["answer_check_unseen_threshold"].default
    unseen = lambda: some_unseen(row["unseen_terms"], row["terms"])  # noqa: E731
    return not refused_by_check(row["check_p_yes"], low, high, unseen)


def table(rows: list[dict[str, Any]]) -> None:
    # each row's signals and check decision, computed once
    scored = [(r["answerable"], signals(r), passes_check(r)) for r in rows]
    answerable = sum(a for a, _, _ in scored)
    passed = [(a, s) for a, s, passes in scored if passes]
    print(
        f"{answerable} answerable, {len(rows) - answerable} uncovered; the default check refuses "
        f"{len(rows) - answerable - sum(not a for a, _ in passed)} uncovered and "
        f"{answerable - sum(a for a, _ in passed)} answerable"
    )
    print(
        "signal: AUC all / of those the check passes; at best, the uncovered it also refuses at +0..+5 answerable"
    )
    for name in SIGNALS:
        kept = [s[name] for a, s in passed if a]
        left = [s[name] for a, s in passed if not a]
        every = auc([s[name] for a, s, _ in scored if a], [s[name] for a, s, _ in scored if not a])
        cuts = [float("-inf"), *sorted(set(kept + left))]  # refuse what scores at or below a cut
        counts = [(sum(v <= c for v in kept), sum(v <= c for v in left)) for c in cuts]
        steps = [f"+{extra}:{max(right for wrong, right in counts if wrong <= extra)}" for extra in range(6)]
        shown = " / ".join("-" if x is None else f"{x:.3f}" for x in (every, auc(kept, left)))
        print(f"  {name:30s} {shown}  " + " ".join(steps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("questions", type=Path, nargs="?")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--docs", type=Path)
    parser.add_argument("--out", type=Path, default=Path("refusal-signals.jsonl"))
    parser.add_argument("--rows", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    if args.questions:
        runtime = open_runtime(Settings(data_dir=args.data_dir, answer_check_threshold=1e-4))
        if args.docs:
            ingestion.ingest_folder(runtime, LOCAL, "bench", args.docs)
        rows = (
            {(row := json.loads(line))["key"]: row for line in args.out.open()} if args.out.exists() else {}
        )
        for q in load_questions(args.questions):
            row = rows.get(q.key) or {"key": q.key, "answerable": q.answerable, "question": q.question}
            if "answer" in row and "passage_p_yes" in row:
                continue  # probed whole on an earlier run: nothing to write
            if "answer" not in row:
                row |= probe(runtime, q.question)
            if "passage_p_yes" not in row:  # rows saved before this probe was added get it too
                row["passage_p_yes"] = judge_passages(runtime, q.question, row["sources"])
            rows[q.key] = row
            temporary = args.out.with_suffix(".tmp")
            temporary.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
            temporary.replace(args.out)  # a broken run resumes from the rows written so far
        args.rows.append(args.out)
    table([json.loads(line) for path in args.rows for line in path.open()])


if __name__ == "__main__":
    main()
