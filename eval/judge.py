"""LLM-judged faithfulness: is each sentence of an answer supported by the chunks it cites?

Talks to any OpenAI-compatible chat endpoint over HTTP; the score is the share of sentences judged supported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from eval.metrics import cited_numbers
from indexes.errors import RagsvcError

# A system turn and a trailing "Answer:" keep small judges to one word: SmolLM2-135M echoed the question back
# (no verdict) under the user turn alone, and answers yes or no with these.
JUDGE_SYSTEM = "You check claims against a source text. You reply with one word: yes or no."
JUDGE_PROMPT = (
    "Source text:\n{context}\n\nClaim: {claim}\n\n"
    "Is the claim fully supported by the source text? Answer yes or no.\nAnswer:"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")
_CITATION = re.compile(r"\s*\[\d+\]")
# A small judge can only read so much; the cited chunks are cut to this many characters each.
MAX_CONTEXT_CHARS = 1500


class JudgeUnavailable(RagsvcError):
    code = "judge_unavailable"


@dataclass
class Verdicts:
    supported: int
    judged: int
    unclear: int

    @property
    def score(self) -> float | None:
        return self.supported / self.judged if self.judged else None


def claims(answer: str) -> list[tuple[str, list[int]]]:
    """Sentences of at least three words, each with the source numbers it cites."""
    out = []
    for sentence in _SENTENCE.split(answer.strip()):
        text = _CITATION.sub("", sentence).strip()
        if len(text.split()) >= 3:
            out.append((text, cited_numbers(sentence)))
    return out


class OpenAIJudge:
    def __init__(self, base_url: str, model: str, api_key: str = "not-needed", timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {api_key}"})

    def _ask(self, prompt: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": 3,
            "temperature": 0.0,
        }
        try:
            response = self._http.post(f"{self.base_url}/chat/completions", json=body)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
            raise JudgeUnavailable(f"the judge LLM at {self.base_url} failed: {exc}") from exc

    def faithfulness(self, answer: str, source_texts: Sequence[str]) -> Verdicts:
        """Each claim against the chunks it cites (all chunks when it cites none)."""
        verdicts = Verdicts(0, 0, 0)
        for claim, cited in claims(answer):
            chosen = [source_texts[n - 1] for n in cited if 1 <= n <= len(source_texts)] or list(source_texts)
            if not chosen:
                continue
            context = "\n---\n".join(text[:MAX_CONTEXT_CHARS] for text in chosen)
            reply = self._ask(JUDGE_PROMPT.format(context=context, claim=claim)).strip().lower()
            if reply.startswith("yes"):
                verdicts.supported += 1
                verdicts.judged += 1
            elif reply.startswith("no"):
                verdicts.judged += 1
            else:
                verdicts.unclear += 1  # neither yes nor no: reported, not guessed
        return verdicts

    def close(self) -> None:
        self._http.close()
