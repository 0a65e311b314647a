"""The answer check: before an answer is written, the LLM is asked whether its sources answer the question, one
token read as P(yes); below the bar ragsvc refuses with the closest pages and asks for no answer. Its prompt is
the answer's own up to the question, with another cue at its end, so an endpoint with a prompt cache
(llama-server, vLLM) reads the sources once for the check and the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eval.check_bars import refused_by_check, some_unseen
from ragsvc.llm import chat_message
from ragsvc.service.metering import LLMCharge
from ragsvc.service.retrieval import unseen_terms
from ragsvc.service.runtime import Runtime

if TYPE_CHECKING:
    from llama_index.core.llms import ChatMessage

# Asked in place of the answer's cue, after the same system prompt, sources and question.
CHECK_CUE = (
    "\nDo the numbered sources above contain the information needed to answer this question? "
    "Reply with YES or NO only."
)


def check_support(
    runtime: Runtime, messages: list[ChatMessage], answer_cue: str, input_tokens: int, charge: LLMCharge
) -> float | None:
    """The LLM's P(yes) that the sources answer the question (None: neither word), asked on the answer's
    `messages` with CHECK_CUE in place of `answer_cue`."""
    content = (messages[-1].content or "").removesuffix(answer_cue) + CHECK_CUE
    with charge(input_tokens + 16, 1) as meter:
        reply, p_yes = runtime.llm.yes_probability([*messages[:-1], chat_message("user", content)])
        meter.input_tokens, meter.output_tokens = reply.prompt_tokens, reply.completion_tokens
    return p_yes


def below_bar(runtime: Runtime, collection: str, question: str, supported: float | None) -> bool:
    """Whether the answer check refuses: P(yes) under the bar, the higher one where the question names a term
    no chunk of the collection holds; the terms are looked up only where that decides."""
    low, high = runtime.settings.answer_check_threshold, runtime.settings.answer_check_unseen_threshold
    return refused_by_check(
        supported, low, high, lambda: some_unseen(*unseen_terms(runtime, collection, question))
    )
