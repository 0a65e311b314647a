"""Retrieval metrics through ranx (hit@k, recall@k, MRR@10, nDCG@10), and the answer metrics that are ours.

Retrieval is scored at page level: a question is answered by its gold source files, graded or not.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Sequence

RETRIEVAL_METRICS = ("hit@1", "hit@5", "recall@5", "recall@10", "mrr@10", "ndcg@10")
# ranx calls hit@k "hit_rate@k"; its own "hits@k" counts relevant results instead.
_RANX_NAMES = {name: name.replace("hit@", "hit_rate@") for name in RETRIEVAL_METRICS}

# How answers say the documents do not hold the answer. The answer prompt asks for "the documentation does not
# cover it"; SmolLM2-135M writes "The documentation is not complete." or "The documentation is incomplete.".
# Verbs like "does not include" count only with the documents as their subject: "ragsvc does not include
# authentication" is an answer, not a refusal.
_DOCUMENTS = (
    r"(?:documentation|docs|documents?|sources?|(?:provided|given|numbered)\s+(?:text|context|information)|context|"
    r"pages?|manual|guides?)"
)
_REFUSAL = re.compile(
    rf"\b{_DOCUMENTS}\s+(?:does|do)\s*n[o']?t\s+(?:cover|contain|mention|say|describe|include|provide|answer|"
    r"specify|explain|state|address|discuss|have|give|tell)\b"
    rf"|\b{_DOCUMENTS}\s+(?:is|are)\s+(?:not\s+(?:an?\s+)?(?:complete|available|clear|sufficient|enough|provided)|"
    r"incomplete|unavailable|insufficient|unclear|silent)\b"
    rf"|\bnot\s+(?:mentioned|described|specified|addressed|discussed)\s+(?:in|by)\s+(?:the\s+)?{_DOCUMENTS}"
    r"|\b(?:answer|information)\s+(?:is|was)\s+not\s+found\b"
    r"|\bnot\s+(?:covered|documented)\b"
    r"|\bno\s+(?:information|mention|details?|documentation)\s+(?:about|on|of|regarding|for)\b"
    r"|\bthere\s+is\s+no\s+(?:information|mention|documentation)\b"
    r"|\b(?:I|we)\s+(?:cannot|can't|can\s+not|could\s*n[o']t|could\s+not|am\s+unable\s+to|are\s+unable\s+to)"
    r"\s+(?:answer|find|determine|tell|say|help)\b"
    r"|\bunable\s+to\s+(?:answer|find|determine)\b"
    r"|\bI\s+do\s*n[o']t\s+know\b|\bI\s*(?:'m|am)\s+(?:sorry|not\s+sure)\b"
    r"|\bnothing\s+relevant\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")
_WORD = re.compile(r"[^\W\d_]{2}")
_CITATION = re.compile(r"\[(\d+)\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def rank_pages(sources: Sequence[str]) -> list[str]:
    """Chunk sources best first, reduced to distinct pages in the order they first appear."""
    return list(dict.fromkeys(sources))


def retrieval_metrics(
    ranked: dict[str, list[str]], gold: dict[str, dict[str, int]]
) -> dict[str, dict[str, float]]:
    """Each metric per question id; `ranked` holds pages best first, `gold` their relevance grades (> 0)."""
    from ranx import Qrels, Run, evaluate

    ids = [qid for qid in ranked if any(grade > 0 for grade in gold.get(qid, {}).values())]
    if not ids:
        return {}
    qrels = Qrels({qid: {doc: grade for doc, grade in gold[qid].items() if grade > 0} for qid in ids})
    # Scores that fall with the rank, so ranx keeps our order exactly (no ties to break).
    run = Run({qid: {doc: 1.0 / rank for rank, doc in enumerate(ranked[qid], 1)} for qid in ids})
    with warnings.catch_warnings():
        # numba warns about an integer cast inside ranx's kernels; the values are small counts.
        warnings.simplefilter("ignore")
        evaluate(qrels, run, list(_RANX_NAMES.values()), return_mean=False, make_comparable=True)
    return {
        qid: {ours: float(run.scores[theirs][qid]) for ours, theirs in _RANX_NAMES.items()} for qid in ids
    }


def normalize_tokens(text: str) -> list[str]:
    """SQuAD-style: lower case, no punctuation, no articles."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_tokens(_CITATION.sub("", prediction)), normalize_tokens(gold)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s]


def is_refusal(answer: str) -> bool:
    """The answer says the documents do not answer the question: in its first sentence, or in most of its
    distinct sentences. A refusal of one detail after an answer ("... [1]. The docs do not say why.") is not
    a refusal of the question."""
    # list numbers ("1.", "2.") are not sentences of their own: SmolLM2 numbers its refusals
    said = list(dict.fromkeys(s for s in sentences(answer) if _WORD.search(s)))
    if not said:
        return False
    refusing = [bool(_REFUSAL.search(s)) for s in said]
    return refusing[0] or 2 * sum(refusing) > len(said)


def cited_numbers(answer: str) -> list[int]:
    return [int(n) for n in _CITATION.findall(answer)]


def citation_correctness(answer: str, cited_sources: Sequence[str], gold: set[str]) -> float | None:
    """Share of the answer's [n] citations whose source n is a gold source; None when nothing is cited."""
    cited = [n for n in cited_numbers(answer) if 1 <= n <= len(cited_sources)]
    if not cited:
        return None
    return sum(cited_sources[n - 1] in gold for n in cited) / len(cited)


def contains_rate(text: str, needles: Sequence[str]) -> float | None:
    """Share of the needles found in the text, ignoring case and runs of whitespace; None without needles."""
    if not needles:
        return None
    haystack = " ".join(text.lower().split())
    return sum(" ".join(n.lower().split()) in haystack for n in needles) / len(needles)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linearly interpolated; None for no values."""
    import numpy

    return float(numpy.percentile(values, q)) if values else None


def mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
