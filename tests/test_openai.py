"""The OpenAI-compatible surface, used by the real `openai` client and llama-index's OpenAILike."""

import re

import httpx
import openai
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

QUESTION = "How many dimensions do the embedding vectors have?"
GOLD = "concepts/embedding-models.md"


@pytest.fixture
def client(assistant_server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{assistant_server}/v1", api_key="unused", max_retries=0)


@pytest.mark.slow
def test_models_lists_collections_as_assistants(client: openai.OpenAI):
    assert [m.id for m in client.models.list()] == ["docs"]
    assert client.models.retrieve("docs").owned_by == "ragsvc"


@pytest.mark.slow
def test_openai_client_gets_a_cited_answer(client: openai.OpenAI):
    completion = client.chat.completions.create(
        model="docs", messages=[{"role": "user", "content": QUESTION}]
    )
    content = completion.choices[0].message.content
    assert "384" in content
    answer, _, sources = content.partition("\n\nSources:\n")
    # Which source SmolLM2 cites moves with the prompt; that it cites one must not.
    assert re.search(r"\[\d+\]", answer)
    assert sources.splitlines()[0].startswith(f"[1] {GOLD}")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 100 and completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


@pytest.mark.slow
def test_openai_client_streams_a_cited_answer_with_usage(client: openai.OpenAI):
    stream = client.chat.completions.create(
        model="docs",
        messages=[{"role": "system", "content": "Answer in English."}, {"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # token by token
    assert "384" in text and f"[1] {GOLD}" in text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.slow
def test_max_tokens_bounds_the_answer_and_finish_reason_says_it_was_cut(client: openai.OpenAI):
    """The LLM writes no more than the caller asked for (budgets are drawn on that bound), and the caller
    learns the answer is unfinished, whole and streamed."""
    asked = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 5}
    completion = client.chat.completions.create(**asked)
    assert 0 < completion.usage.completion_tokens <= 5
    assert completion.choices[0].finish_reason == "length"
    chunks = list(
        client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
    )
    assert 0 < chunks[-1].usage.completion_tokens <= 5
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


@pytest.mark.slow
def test_llama_index_openailike_uses_a_collection_as_its_model(assistant_server: str):
    llm = OpenAILike(model="docs", api_base=f"{assistant_server}/v1", api_key="unused", is_chat_model=True)
    response = llm.chat([ChatMessage(role="user", content=QUESTION)])
    assert "384" in response.message.content
    assert f"[1] {GOLD}" in response.message.content


@pytest.mark.slow
def test_unknown_model_and_empty_conversation_are_client_errors(client: openai.OpenAI, assistant_server: str):
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "collection 'nope' does not exist" in str(not_found.value)
    response = httpx.post(
        f"{assistant_server}/v1/chat/completions",
        json={"model": "docs", "messages": [{"role": "assistant", "content": "hello"}]},
    )
    assert response.status_code == 422
    assert "end with a user message" in response.json()["error"]["message"]
