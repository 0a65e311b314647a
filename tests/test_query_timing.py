"""ragsvc's own share of a streamed answer is recorded apart from the LLM's; token counts match the server's."""

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ragsvc.llm import AnswerLLM
from ragsvc.settings import Settings

TIMERS = ("ragsvc_pre_llm_seconds", "ragsvc_llm_first_token_seconds")


def _timers(client: TestClient) -> dict[str, tuple[float, float]]:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name in TIMERS:
            values = {sample.name: sample.value for sample in family.samples}
            found[family.name] = (values[family.name + "_sum"], values[family.name + "_count"])
    return found


@pytest.mark.slow
def test_a_streamed_answer_records_ragsvc_time_before_the_llm_and_the_llm_first_token(
    client_with_llm: TestClient, sample_docs: Path
):
    ingested = client_with_llm.post("/collections/docs/ingest", json={"path": str(sample_docs), "wait": True})
    assert ingested.status_code == 200, ingested.text
    before = _timers(client_with_llm)
    body = {"question": "How do I stop the demo started with scripts/run.sh?", "stream": True}
    with client_with_llm.stream("POST", "/collections/docs/query", json=body) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("event:")]
    assert "event: done" in events
    after = _timers(client_with_llm)
    for name in TIMERS:
        (sum_before, count_before), (sum_after, count_after) = before.get(name, (0.0, 0.0)), after[name]
        assert count_after == count_before + 1, name  # one observation for the one answer
        assert sum_after > sum_before, name


@pytest.mark.slow
def test_token_counts_match_the_llm_server_also_when_counted_again(running_llm: str):
    llm = AnswerLLM(Settings(llm_base_url=running_llm))
    texts = [
        "You are a documentation assistant.",
        "Press Ctrl+C in the terminal.",
        "You are a documentation assistant.",
    ]
    tokenize = running_llm.removesuffix("/v1") + "/tokenize"
    expected = [len(httpx.post(tokenize, json={"content": t}).json()["tokens"]) for t in texts]

    assert llm.count_tokens(texts) == expected
    assert llm.count_tokens(texts[::-1]) == expected[::-1]
