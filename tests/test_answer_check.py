"""The answer check: before an answer is written, the LLM is asked whether the sources answer the question (its
P(yes), read from the endpoint's logprobs), and below RAGSVC_ANSWER_CHECK_THRESHOLD ragsvc refuses with the
closest pages instead of asking for an answer. The LLM here is the bundled SmolLM2, for the plumbing: what the
check decides with a model able to follow the prompt is measured in the README (Qwen2.5-Coder-1.5B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragsvc.answer import NOT_ANSWERED, prepare
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings
from tests.conftest import app_client

QUESTION = "How many dimensions do the embedding vectors have?"


@pytest.mark.slow
def test_below_the_threshold_the_answer_is_a_refusal_with_the_closest_pages(
    settings: Settings, data_dir_with_docs: Path, running_llm: str
):
    settings = settings.model_copy(update={"llm_base_url": running_llm})
    runtime = open_runtime(settings.model_copy(update={"answer_check_threshold": 1.0}))
    try:
        supported = prepare(runtime, "docs", QUESTION).supported
    finally:
        runtime.close()
    # the same prompt is decided the same way: thresholds on either side of its probability
    assert supported is not None and 0.0 < supported < 1.0, supported

    strict = settings.model_copy(update={"answer_check_threshold": (supported + 1.0) / 2})
    with app_client(strict) as client:
        refused = client.post("/collections/docs/query", json={"question": QUESTION}).json()
        assert refused["refused"] is True and refused["answer"] == NOT_ANSWERED
        assert refused["sources"] == [] and refused["closest_pages"][0]["source"]
        assert refused["usage"]["completion_tokens"] == 0  # no answer was asked for
        streamed = client.post("/collections/docs/query", json={"question": QUESTION, "stream": True}).text
        assert NOT_ANSWERED in streamed and '"refused": true' in streamed
        chat = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}]}
        reply = client.post("/v1/chat/completions", json=chat).json()
        assert reply["choices"][0]["message"]["content"].startswith(NOT_ANSWERED)  # then the closest pages

    lenient = settings.model_copy(update={"answer_check_threshold": supported / 2})
    with app_client(lenient) as client:
        answered = client.post("/collections/docs/query", json={"question": QUESTION}).json()
        assert answered["answer"] != NOT_ANSWERED and answered["usage"]["completion_tokens"] > 0
