"""Citations in an answer: the [n] markers, and the sources attributed to sentences a small model left uncited."""

from __future__ import annotations

import re
from collections.abc import Callable

from eval.metrics import is_refusal
from ragsvc.service.retrieval import Source

# A sentence is attributed to a source only when they are at least this similar (MiniLM cosine).
ATTRIBUTION_THRESHOLD = 0.4
CITATION = re.compile(r"\[(\d+)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")


def attribute_citations(
    answer: str, sources: list[Source], embed: Callable[[list[str]], list[list[float]]]
) -> str:
    """Cite every sentence the model left uncited with the source it is closest to, and drop citations
    of sources that do not exist. Small models often answer well but forget the [n] markers."""
    if is_refusal(answer):
        # "The documentation does not cover this. [2]" would show a source as if it held the answer.
        return CITATION.sub("", answer).replace(" .", ".").strip()
    answer = CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(sources) else "", answer)
    sentences = [s for s in _SENTENCE.split(answer.strip()) if s]
    uncited = [
        i
        for i, s in enumerate(sentences)
        if not CITATION.search(s) and len(s.split()) >= 3 and not is_refusal(s)
    ]
    if not uncited or not sources:
        return answer
    vectors = embed([sentences[i] for i in uncited] + [f"{s.section}\n{s.text}" for s in sources])
    sentence_vectors, source_vectors = vectors[: len(uncited)], vectors[len(uncited) :]
    for i, vector in zip(uncited, sentence_vectors, strict=True):
        scores = [sum(a * b for a, b in zip(vector, other, strict=True)) for other in source_vectors]
        best = max(range(len(scores)), key=scores.__getitem__)
        if scores[best] >= ATTRIBUTION_THRESHOLD:
            sentence = sentences[i].rstrip()
            stripped = sentence.rstrip(".!?:")
            sentences[i] = f"{stripped} [{best + 1}]{sentence[len(stripped) :]}"
    return " ".join(sentences)
