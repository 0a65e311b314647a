"""Grounded answers: the retrieved chunks become numbered sources, the LLM answers only from them."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel

from indexes.engine import SearchMode
from ragsvc.retrieval import Source, retrieve
from ragsvc.services import Services

SYSTEM_PROMPT = (
    "You are a documentation assistant. Answer the question using only the numbered sources. "
    "After each fact, cite the source it comes from as [1], [2] and so on. "
    "If the sources do not answer the question, say that the documentation does not cover it. "
    "Be brief."
)
# Conservative: English prose runs about four characters a token; three leaves headroom for code.
CHARS_PER_TOKEN = 3
PROMPT_OVERHEAD_TOKENS = 64
# A sentence is attributed to a source only when they are at least this similar (MiniLM cosine).
ATTRIBUTION_THRESHOLD = 0.4
_CITATION = re.compile(r"\[(\d+)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")


class Answer(BaseModel):
    answer: str
    sources: list[Source]


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def format_sources(sources: list[Source]) -> str:
    return "\n\n".join(f"[{i}] {s.section} ({s.source})\n{s.text}" for i, s in enumerate(sources, 1))


def fit_sources(
    sources: list[Source], question: str, context_window: int, answer_tokens: int
) -> list[Source]:
    """The most relevant sources that fit the window beside the prompt and the reserved answer."""
    budget = context_window - answer_tokens - PROMPT_OVERHEAD_TOKENS
    budget -= estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(question)
    kept: list[Source] = []
    for source in sources:  # sources come best first
        if estimate_tokens(format_sources([*kept, source])) > budget:
            break
        kept.append(source)
    return kept


def build_user_prompt(question: str, sources: list[Source]) -> str:
    return f"Sources:\n\n{format_sources(sources)}\n\nQuestion: {question}\nAnswer (cite sources as [n]):"


def attribute_citations(
    answer: str, sources: list[Source], embed: Callable[[list[str]], list[list[float]]]
) -> str:
    """Cite every sentence the model left uncited with the source it is closest to, and drop citations
    of sources that do not exist. Small models often answer well but forget the [n] markers."""
    answer = _CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(sources) else "", answer)
    sentences = [s for s in _SENTENCE.split(answer.strip()) if s]
    uncited = [i for i, s in enumerate(sentences) if not _CITATION.search(s) and len(s.split()) >= 3]
    if not uncited or not sources:
        return answer
    vectors = embed([sentences[i] for i in uncited] + [f"{s.section}\n{s.text}" for s in sources])
    sentence_vectors, source_vectors = vectors[: len(uncited)], vectors[len(uncited) :]
    for i, vector in zip(uncited, sentence_vectors, strict=True):
        scores = [sum(a * b for a, b in zip(vector, other, strict=True)) for other in source_vectors]
        best = max(range(len(scores)), key=scores.__getitem__)
        if scores[best] >= ATTRIBUTION_THRESHOLD:
            sentence = sentences[i].rstrip()
            end = len(sentence) - len(sentence.rstrip(".!?:"))
            sentences[i] = f"{sentence[: len(sentence) - end]} [{best + 1}]{sentence[len(sentence) - end :]}"
    return " ".join(sentences)


def answer_question(
    services: Services,
    collection: str,
    question: str,
    *,
    top_k: int | None = None,
    mode: SearchMode | None = None,
) -> Answer:
    sources = retrieve(services, collection, question, top_k=top_k, mode=mode)
    llm = services.llm
    sources = fit_sources(sources, question, llm.context_window, llm.max_tokens)
    if not sources:
        return Answer(answer="The documentation does not cover this: nothing relevant was found.", sources=[])
    text = llm.chat(SYSTEM_PROMPT, build_user_prompt(question, sources))
    embedder = services.embedder_for(services.registry.get(collection))
    return Answer(answer=attribute_citations(text, sources, embedder.embed_documents), sources=sources)
