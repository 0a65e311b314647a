"""LLM-judged faithfulness: is each sentence of an answer supported by the chunks it cites?

Talks to any OpenAI-compatible chat endpoint over HTTP. The verdict is read from the probabilities of the first
token (P(yes) against P(no)) where the endpoint returns logprobs, and from the reply's text where it does not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from eval.metrics import cited_numbers, sentences
from indexes.errors import RagsvcError

# A system turn and a trailing "Answer:" keep small judges to one word: SmolLM2-135M echoed the question back
# (no verdict) under the user turn alone, and answers yes or no with these. It still cannot judge: on the
# hand-labelled claims of tests/test_judge.py its P(yes) does not separate supported from unsupported (ROC AUC
# 0.50-0.56), and neither did four few-shot examples, the claim put first, or P(yes) calibrated against the
# same question with no source text (AUC 0.40-0.55). A larger judge goes in through --judge-url/--judge-model.
JUDGE_SYSTEM = "You check claims against a source text. You reply with one word: yes or no."
JUDGE_PROMPT = (
    "Source text:\n{context}\n\nClaim: {claim}\n\n"
    "Is the claim fully supported by the source text? Answer yes or no.\nAnswer:"
)
_CITATION = re.compile(r"\s*\[\d+\]")
# A small judge can only read so much, and the bundled llama-server has a 2048-token window: the cited chunks
# share this many characters (at most 1500 each), and a claim is cut after 600 (a rambling answer once made one
# "sentence" of 9,000 tokens, which llama-server refused with a 400).
MAX_CONTEXT_CHARS = 1500
MAX_SOURCE_CHARS = 4000
MAX_CLAIM_CHARS = 600
# How many alternatives for the first token to ask for; OpenAI allows up to 20.
TOP_LOGPROBS = 20
# A claim is supported when P(yes) / (P(yes) + P(no)) is above this.
SUPPORTED_ABOVE = 0.5
# Tokenizers spell the answer word many ways ("Yes", " yes", "ĠYes", "▁YES"); all of them count.
_TOKEN_MARKS = " \t\nĠ▁Ċ"
_YES, _NO = "yes", "no"


class JudgeUnavailable(RagsvcError):
    code = "judge_unavailable"


@dataclass
class Verdict:
    """One claim: P(yes) among yes and no when logprobs were read, else None; and the reply's text."""

    p_yes: float | None
    text: str

    @property
    def supported(self) -> bool | None:
        if self.p_yes is not None:
            return self.p_yes > SUPPORTED_ABOVE
        return said_yes(self.text)


def said_yes(reply: str) -> bool | None:
    """A yes-or-no reply read from its first word: True, False, or None when it is neither (not guessed)."""
    word = reply.strip().lower()
    if word.startswith(_YES):
        return True
    if word.startswith(_NO):
        return False
    return None


@dataclass
class Verdicts:
    supported: int
    judged: int
    unclear: int
    # P(yes) of each claim judged from logprobs: their mean is reported next to the share supported
    probabilities: list[float] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        return self.supported / self.judged if self.judged else None

    @property
    def mean_p_yes(self) -> float | None:
        return sum(self.probabilities) / len(self.probabilities) if self.probabilities else None

    def add(self, verdict: Verdict) -> None:
        supported = verdict.supported
        if supported is None:
            self.unclear += 1
            return
        self.judged += 1
        self.supported += supported
        if verdict.p_yes is not None:
            self.probabilities.append(verdict.p_yes)


def claims(answer: str) -> list[tuple[str, list[int]]]:
    """Sentences of at least three words, each with the source numbers it cites."""
    out = []
    for sentence in sentences(answer):
        text = _CITATION.sub("", sentence).strip()
        if len(text.split()) >= 3:
            out.append((text, cited_numbers(sentence)))
    return out


def p_yes(top_logprobs: Sequence[dict]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the first token's alternatives, every spelling of each word summed;
    None when neither word is among them."""
    mass = {_YES: 0.0, _NO: 0.0}
    for alternative in top_logprobs:
        word = str(alternative.get("token", "")).strip(_TOKEN_MARKS).lower()
        if word in mass and alternative.get("logprob") is not None:
            mass[word] += math.exp(float(alternative["logprob"]))
    total = mass[_YES] + mass[_NO]
    return mass[_YES] / total if total > 0 else None


def _first_token_alternatives(choice: dict) -> list[dict] | None:
    """OpenAI's chat shape: choices[0].logprobs.content[0].top_logprobs (llama-server and vLLM send it too)."""
    logprobs = choice.get("logprobs") or {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    return content[0].get("top_logprobs") or None


class OpenAIJudge:
    def __init__(self, base_url: str, model: str, api_key: str = "not-needed", timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {api_key}"})
        # Cleared when the endpoint refuses logprobs; every later claim is then judged from the text alone.
        self.logprobs = True

    def _post(self, prompt: str) -> dict:
        body: dict = {
            "model": self.model,
            "messages": [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            "temperature": 0.0,
        }
        if self.logprobs:
            body |= {"max_tokens": 1, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        else:
            body["max_tokens"] = 3
        response = self._http.post(f"{self.base_url}/chat/completions", json=body)
        if self.logprobs and response.status_code in (400, 422):
            # An endpoint without logprobs support rejects the fields: ask again for the text alone, and keep
            # to that only when the plain request is accepted (a prompt too long is refused either way).
            self.logprobs = False
            try:
                return self._post(prompt)
            except httpx.HTTPStatusError:
                self.logprobs = True
                raise
        response.raise_for_status()
        return response.json()["choices"][0]

    def verdict(self, claim: str, context: str) -> Verdict:
        """The judge's verdict on one claim against one source text."""
        try:
            choice = self._post(JUDGE_PROMPT.format(context=context, claim=claim[:MAX_CLAIM_CHARS]))
            text = (choice.get("message") or {}).get("content") or ""
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code not in (400, 413, 422):
                raise JudgeUnavailable(f"the judge LLM at {self.base_url} failed: {exc}") from exc
            # The judge refused this one request (too long for its window, say): the claim counts as
            # unclear, and the report says how many were.
            return Verdict(None, "")
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeUnavailable(f"the judge LLM at {self.base_url} failed: {exc}") from exc
        alternatives = _first_token_alternatives(choice)
        return Verdict(p_yes(alternatives) if alternatives else None, text)

    def faithfulness(self, answer: str, source_texts: Sequence[str]) -> Verdicts:
        """Each distinct claim against the chunks it cites (all chunks when it cites none)."""
        verdicts = Verdicts(0, 0, 0)
        pairs: dict[tuple[str, str], None] = {}
        for claim, cited in claims(answer):
            chosen = [source_texts[n - 1] for n in cited if 1 <= n <= len(source_texts)] or list(source_texts)
            if chosen:
                share = min(MAX_CONTEXT_CHARS, MAX_SOURCE_CHARS // len(chosen))
                pairs["\n---\n".join(text[:share] for text in chosen), claim] = None
        # A small LLM repeats itself; a sentence said again against the same chunks is one claim, judged once.
        for context, claim in pairs:
            verdicts.add(self.verdict(claim, context))
        return verdicts

    def close(self) -> None:
        self._http.close()
