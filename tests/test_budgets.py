"""Budgets and rate limits as callers meet them: requests, tokens and credits per user run out with a 429
whose Retry-After is honoured, on REST, /v1 and MCP; counted from ragsvc's own token counts and the LLM's
reported usage; exact over two server processes sharing the counters; kept over a restart.

The windows are shortened through settings (seconds instead of a minute or a day) so that a test sees one
end; no test asserts on timing."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.models import MINILM
from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key
from ragsvc.access.limits import Limits, set_limits
from ragsvc.access.prices import Price, set_price
from ragsvc.access.principals import create_group, create_user, grant
from ragsvc.settings import Settings
from tests.conftest import _serve, app_client

QUESTION = "How do I set the number of chunks a search returns?"


def make_tenant(data_dir: Path, limits: Limits, prices: dict[str, Price] | None = None) -> str:
    """User ann in group ap-a with `limits`, reading every collection; returns her key."""
    db = AccessDB(data_dir / ACCESS_DB)
    create_group(db, "ap-a")
    set_limits(db, "group", "ap-a", limits)
    create_user(db, "ann", groups=["ap-a"])
    grant(db, "group", "ap-a", "*", "read")
    for model, price in (prices or {}).items():
        set_price(db, model, price)
    secret = create_key(db, "ann", "laptop").secret
    db.close()
    return secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def until_refused(call, most: int = 50) -> tuple[list[httpx.Response], httpx.Response]:  # noqa: ANN001
    """Calls until one is refused: the admitted responses, and the refusal."""
    admitted = []
    for _ in range(most):
        response = call()
        if response.status_code == 429:
            return admitted, response
        assert response.status_code == 200, response.text
        admitted.append(response)
    raise AssertionError(f"no 429 in {most} calls")


@pytest.fixture
def secured_docs(data_dir_with_docs: Path, settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": "on", "rate_window_seconds": 2, "budget_window_seconds": 3})


@pytest.mark.parametrize(
    ("limits", "code", "header"),
    [
        (Limits(rpm=3), "rate_limited", "Requests"),
        (Limits(tpm=40), "rate_limited", "Tokens"),
        (Limits(daily_credits=3e-5), "budget_exhausted", "Credits"),
    ],
    ids=["rpm", "tpm", "daily-credits"],
)
def test_a_limit_runs_out_with_429_and_the_call_after_retry_after_succeeds(
    secured_docs: Settings, data_dir_with_docs: Path, limits: Limits, code: str, header: str
):
    key = make_tenant(data_dir_with_docs, limits, {MINILM: Price(embedding=1e-6)})
    with app_client(secured_docs) as client:

        def search() -> httpx.Response:
            return client.post("/collections/docs/search", json={"question": QUESTION}, headers=bearer(key))

        admitted, refused = until_refused(search)
        assert admitted, "the first call fits the limit"
        # Exact: the call refused is the one after the call that left nothing of this limit.
        assert float(admitted[-1].headers[f"X-RateLimit-Remaining-{header}"]) < (
            float(admitted[0].headers[f"X-RateLimit-Limit-{header}"])
            if header == "Requests"
            else float("inf")
        )
        error = refused.json()["error"]
        assert error["code"] == code and "try again in" in error["message"]
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after == error["retry_after"] and retry_after >= 1
        assert "remaining_credits" in error
        assert f"X-RateLimit-Limit-{header}" in refused.headers
        time.sleep(retry_after)
        again = search()
        assert again.status_code == 200, again.text
        assert again.json()["results"]


def test_the_requests_left_count_down_one_by_one_to_the_refusal(secured_docs: Settings, data_dir_with_docs):
    key = make_tenant(data_dir_with_docs, Limits(rpm=4))
    with app_client(secured_docs) as client:
        admitted, refused = until_refused(
            lambda: client.post("/collections/docs/search", json={"question": "x"}, headers=bearer(key))
        )
        left = [int(r.headers["X-RateLimit-Remaining-Requests"]) for r in admitted]
        # A window (2 s here) may end between two calls, and then the count goes up again; the refusal always
        # comes right after a call that left none.
        assert left[-1] == 0 and all(b == a - 1 or b >= a for a, b in zip(left, left[1:], strict=False))
        assert refused.json()["error"]["remaining_credits"] is None  # the group sets no credit budget


def test_a_keys_own_limit_and_a_collections_limit_apply_beside_the_groups(
    settings: Settings, data_dir_with_docs: Path
):
    laptop = make_tenant(data_dir_with_docs, Limits(rpm=100))
    db = AccessDB(data_dir_with_docs / ACCESS_DB)
    phone = create_key(db, "ann", "phone").secret
    set_limits(db, "key", laptop.split("_")[1], Limits(rpm=1))
    set_limits(db, "collection", "docs", Limits(rpm=3))  # per user, in this collection
    db.close()
    # An hour's window: it does not end within the test.
    with app_client(settings.model_copy(update={"auth": "on", "rate_window_seconds": 3600})) as client:

        def search(key: str) -> httpx.Response:
            return client.post("/collections/docs/search", json={"question": "x"}, headers=bearer(key))

        assert search(laptop).status_code == 200
        by_key = search(laptop)
        assert by_key.status_code == 429 and "for key " in by_key.json()["error"]["message"]
        assert [search(phone).status_code for _ in range(3)] == [200, 200, 429]
        refused = search(phone).json()["error"]["message"]
        assert "for user ann, collection docs" in refused
        usage = client.get("/usage?by=key", headers=bearer(phone)).json()
        assert {row["key"]: row["requests"] for row in usage} == {
            laptop.split("_")[1]: 1,
            phone.split("_")[1]: 2,
        }


def test_counters_and_usage_survive_a_restart(settings: Settings, data_dir_with_docs: Path):
    key = make_tenant(data_dir_with_docs, Limits(daily_credits=2e-5), {MINILM: Price(embedding=1e-6)})
    secured = settings.model_copy(update={"auth": "on"})  # a real UTC day: it does not end in this test
    with app_client(secured) as client:
        admitted, refused = until_refused(
            lambda: client.post("/collections/docs/search", json={"question": QUESTION}, headers=bearer(key))
        )
        used = client.get("/usage", headers=bearer(key)).json()
    with app_client(secured) as client:
        again = client.post("/collections/docs/search", json={"question": QUESTION}, headers=bearer(key))
        assert again.status_code == 429 and again.json()["error"]["code"] == "budget_exhausted"
        assert client.get("/usage", headers=bearer(key)).json() == used
    assert sum(row["requests"] for row in used) == len(admitted)


def test_embeddings_are_charged_what_ragsvc_counted_and_refused_in_openai_shape(
    settings: Settings, data_dir: Path
):
    key = make_tenant(data_dir, Limits(tpm=100), {MINILM: Price(embedding=1e-3)})
    with app_client(settings.model_copy(update={"auth": "on"})) as client:
        body = {"model": MINILM, "input": ["one sentence to embed", "and another one"]}
        first = client.post("/v1/embeddings", json=body, headers=bearer(key))
        assert first.status_code == 200
        tokens = first.json()["usage"]["prompt_tokens"]
        assert int(first.headers["X-RateLimit-Remaining-Tokens"]) == 100 - tokens
        too_big = client.post("/v1/embeddings", json={**body, "input": ["word " * 120]}, headers=bearer(key))
        assert too_big.status_code == 429
        error = too_big.json()["error"]
        assert error["type"] == "rate_limit_error" and error["param"] is None
        assert error["code"] == "rate_limited" and "larger than the limit" in error["message"]
        usage = client.get("/usage", headers=bearer(key)).json()
        assert [(r["model"], r["embedding_tokens"]) for r in usage] == [(MINILM, tokens)]
        assert usage[0]["credits"] == pytest.approx(tokens * 1e-3)


@pytest.fixture
def two_replicas(tmp_path: Path, redis_server: str) -> Iterator[tuple[list[str], str]]:
    """Two `ragsvc serve` processes, each on its own data dir holding the same users and keys, sharing their
    counters in one Redis (as replicas do); yields their URLs and ann's key."""
    first, second = tmp_path / "replica-a", tmp_path / "replica-b"
    # A window of an hour: it does not end within the test, so the count is over one window.
    key = make_tenant(first, Limits(rpm=6, tpm=10_000), {MINILM: Price(embedding=1e-6)})
    shutil.copytree(first, second)
    env = {"RAGSVC_AUTH": "on", "RAGSVC_REDIS_URL": redis_server, "RAGSVC_RATE_WINDOW_SECONDS": "3600"}
    env["RAGSVC_JOB_QUEUE"] = f"budgets-{tmp_path.name}"  # the counters' namespace: this test's alone
    for url_a in _serve(first, {**env, "RAGSVC_DATA_DIR": str(first)}):
        for url_b in _serve(second, {**env, "RAGSVC_DATA_DIR": str(second)}):
            yield [url_a, url_b], key


def test_limits_are_counted_exactly_over_two_server_processes(two_replicas: tuple[list[str], str]):
    urls, key = two_replicas
    body = {"model": MINILM, "input": "the same sentence every time"}

    def call(n: int) -> httpx.Response:
        return httpx.post(f"{urls[n % 2]}/v1/embeddings", json=body, headers=bearer(key), timeout=60)

    first = [call(0), call(1)]  # one on each process, which also loads each one's model
    assert [r.status_code for r in first] == [200, 200]
    with ThreadPoolExecutor(8) as pool:
        responses = first + list(pool.map(call, range(12)))
    admitted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(admitted) == 6 and len(refused) == 8, [r.status_code for r in responses]
    assert {r.json()["error"]["code"] for r in refused} == {"rate_limited"}
    tokens = admitted[0].json()["usage"]["prompt_tokens"]
    # Each admitted call drew its tokens on the shared counter: the last one admitted saw all six.
    assert min(int(r.headers["X-RateLimit-Remaining-Tokens"]) for r in admitted) == 10_000 - 6 * tokens
    # Usage rows are each process's own (its data dir); together they hold every admitted request.
    usage = [httpx.get(f"{url}/usage", headers=bearer(key)).json() for url in urls]
    assert sum(row["requests"] for rows in usage for row in rows) == 6


@pytest.fixture
def budgeted_assistant(settings: Settings, data_dir_with_docs: Path, running_llm: str) -> Iterator:
    prices = {settings.llm_model: Price(input=1e-4, output=1e-4), MINILM: Price(embedding=1e-6)}
    key = make_tenant(data_dir_with_docs, Limits(daily_credits=0.3), prices)
    update = {"auth": "on", "llm_base_url": running_llm, "llm_timeout": 900}
    with app_client(settings.model_copy(update=update)) as client:
        yield client, key


def test_the_llm_is_charged_its_reported_usage_and_refused_before_it_runs_on_every_front_end(
    budgeted_assistant: tuple[TestClient, str], settings: Settings
):
    client, key = budgeted_assistant
    chat = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 64}
    admitted, refused = until_refused(
        lambda: client.post("/v1/chat/completions", json=chat, headers=bearer(key)), most=10
    )
    reported = [r.json()["usage"] for r in admitted]
    usage = {r["model"]: r for r in client.get("/usage", headers=bearer(key)).json()}
    llm = usage[settings.llm_model]
    # Charged what the LLM reported, for the admitted calls only: the refused one never reached it.
    assert llm["input_tokens"] == sum(u["prompt_tokens"] for u in reported)
    assert llm["output_tokens"] == sum(u["completion_tokens"] for u in reported)
    charged = sum(row["credits"] for row in usage.values())  # the LLM's and the questions' embeddings
    error = refused.json()["error"]
    assert refused.status_code == 429 and error["code"] == "budget_exhausted"
    assert error["type"] == "insufficient_quota"
    # Exact: what is left is the budget less every charge, the refused request's question embedding included
    # (it was admitted and embedded; its LLM call was refused).
    assert error["remaining_credits"] == pytest.approx(0.3 - charged, abs=1e-9)
    assert float(admitted[-1].headers["X-RateLimit-Remaining-Credits"]) >= error["remaining_credits"]

    streamed = client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=bearer(key))
    assert streamed.status_code == 429 and streamed.headers["content-type"].startswith("application/json")
    query = client.post("/collections/docs/query", json={"question": QUESTION}, headers=bearer(key))
    assert query.status_code == 429 and "Retry-After" in query.headers
    tool = mcp_call(client, key, "ask", {"collection": "docs", "question": QUESTION})
    assert tool["isError"] and "budget_exhausted" in tool["content"][0]["text"]
    after = {r["model"]: r for r in client.get("/usage", headers=bearer(key)).json()}
    assert after[settings.llm_model] == llm  # none of the refused calls reached the LLM


def mcp_call(client: TestClient, key: str, tool: str, arguments: dict) -> dict:
    """One tools/call over /mcp's streamable HTTP transport (stateless, JSON replies)."""
    headers = bearer(key) | {
        "Accept": "application/json, text/event-stream",
        "Host": "127.0.0.1:8000",  # /mcp refuses other hosts (DNS rebinding); the TestClient's is 'testserver'
    }
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    response = client.post("/mcp", json=request, headers=headers)
    assert response.status_code == 200, response.text
    return json.loads(response.text)["result"]
