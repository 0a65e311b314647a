"""Query latency over HTTP: /search p50/p95 and streamed /query time-to-first-token, next to the LLM's own
time-to-first-token for the very prompt ragsvc built, measured in the same run.

ragsvc's share is measured on the same request, not as the difference of two LLM calls: the server records
its time before the LLM call (ragsvc_pre_llm_seconds) and the LLM's time to first text as it saw it
(ragsvc_llm_first_token_seconds); each request's values are the growth of those histograms' sums, read from
/metrics around it. Share = client TTFT - the LLM's TTFT within that request (retrieval, prompt assembly,
HTTP and SSE); the rest of the share after the pre-LLM part is HTTP, SSE and the LLM client library.

Usage: PYTHONPATH=. python bench/query.py [--docs FOLDER] [--questions FILE] [--rounds N] [--data-dir DIR --collection NAME]
Starts llama-server (SmolLM2) and the ragsvc app (uvicorn in a thread, real HTTP on loopback), ingests FOLDER
(into a fresh data dir, or re-ingests it into DIR's collection NAME, where unchanged files are skipped).
Both LLM calls are sent with the prompt uncached by llama-server (ragsvc's first, then the direct one with
cache_prompt off), so neither side gets a warm KV cache.
"""

# ruff: noqa: E402 - sys.path is fixed before the project's imports

from __future__ import annotations

import argparse
import faulthandler
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from eval.questions import load_questions
from ragsvc.answer import prepare
from ragsvc.api import create_app
from ragsvc.llm_server import start_llama_server, wait_until_ready
from ragsvc.settings import Settings
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
# The first non-empty text on each side: an empty role-only chunk is not a token.
RAGSVC_TOKEN = re.compile(r'^data: \{"text": "[^"]')
LLM_TOKEN = re.compile(r'"content":"[^"]')
SERVER_TIMERS = ("ragsvc_pre_llm_seconds", "ragsvc_llm_first_token_seconds")


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"p50 {statistics.median(values):7.1f} ms  p95 {p95:7.1f} ms"


def server_timers(client: httpx.Client, base: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of each server-side timer histogram, from /metrics."""
    found: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(client.get(f"{base}/metrics").text):
        if family.name in SERVER_TIMERS:
            values = {sample.name: sample.value for sample in family.samples}
            found[family.name] = (values[family.name + "_sum"], values[family.name + "_count"])
    return found


def grown_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], name: str
) -> float:
    """The one observation a request added to a histogram, in milliseconds."""
    (sum_before, count_before), (sum_after, count_after) = before[name], after[name]
    if count_after - count_before != 1:
        raise RuntimeError(f"{name} grew by {count_after - count_before} observations in one request")
    return (sum_after - sum_before) * 1000


def first_token_ms(client: httpx.Client, url: str, body: dict, marker: re.Pattern[str]) -> float:
    """Milliseconds until the first line matching marker: the first non-empty piece of the answer."""
    started = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        elapsed = None
        for line in response.iter_lines():  # read to the end, so the next request starts on an idle server
            if elapsed is None and marker.search(line):
                elapsed = (time.perf_counter() - started) * 1000
    if elapsed is None:
        raise RuntimeError(f"no token from {url}")
    return elapsed


def main() -> None:
    faulthandler.dump_traceback_later(1800, exit=True)  # a hung server must not hang the bench
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--questions", type=Path, default=REPO / "eval/sets/ragsvc-docs.jsonl")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--data-dir", type=Path, help="reuse this data dir; unchanged files are not ingested again"
    )
    parser.add_argument("--collection", default="bench")
    args = parser.parse_args()

    llm_port, app_port = free_port(), free_port()
    llm_process = start_llama_server(llm_port, context=4096)
    llm_url = f"http://127.0.0.1:{llm_port}/v1"
    wait_until_ready(llm_url, llm_process)
    settings = Settings(
        data_dir=args.data_dir or Path(tempfile.mkdtemp(prefix="ragsvc-bench-")),
        llm_base_url=llm_url,
        port=app_port,
        llm_max_tokens=64,
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=app_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{app_port}"
    client = httpx.Client(timeout=300)
    try:
        while not server.started:
            time.sleep(0.1)
        job = client.post(
            f"{base}/collections/{args.collection}/ingest", json={"path": str(args.docs), "wait": True}
        ).json()
        summary = job["summary"]
        print(f"ingested {summary['files']} files, {summary['chunks_total']} chunks from {args.docs}")
        questions = [q.question for q in load_questions(args.questions) if q.answerable][: args.rounds]
        runtime = app.state.runtime

        search_ms = []
        for question in questions * 3:
            started = time.perf_counter()
            client.post(
                f"{base}/collections/{args.collection}/search", json={"question": question}
            ).raise_for_status()
            search_ms.append((time.perf_counter() - started) * 1000)

        ragsvc_ttft, llm_ttft, pre_llm, llm_in_request = [], [], [], []
        for question in questions:
            body = {"question": question, "stream": True}
            before = server_timers(client, base)
            ragsvc_ttft.append(
                first_token_ms(client, f"{base}/collections/{args.collection}/query", body, RAGSVC_TOKEN)
            )
            after = server_timers(client, base)
            pre_llm.append(grown_ms(before, after, "ragsvc_pre_llm_seconds"))
            llm_in_request.append(grown_ms(before, after, "ragsvc_llm_first_token_seconds"))
            prompt = prepare(runtime, args.collection, question)
            direct = {
                "model": settings.llm_model,
                "messages": [{"role": m.role.value, "content": m.content} for m in prompt.messages],
                "max_tokens": prompt.max_tokens,
                "stream": True,
                "temperature": 0,
                "cache_prompt": False,
            }
            llm_ttft.append(first_token_ms(client, f"{llm_url}/chat/completions", direct, LLM_TOKEN))

        share = [r - m for r, m in zip(ragsvc_ttft, llm_in_request, strict=True)]
        transport = [s - p for s, p in zip(share, pre_llm, strict=True)]
        difference = [r - d for r, d in zip(ragsvc_ttft, llm_ttft, strict=True)]
        print(f"/search over HTTP                 {percentiles(search_ms)}   ({len(search_ms)} requests)")
        print(f"/query stream, first token        {percentiles(ragsvc_ttft)}   ({len(questions)} questions)")
        print(f"  LLM's first token in that call  {percentiles(llm_in_request)}   (measured by ragsvc)")
        print(f"  ragsvc's share                  {percentiles(share)}   (first token - LLM's, same call)")
        print(f"    before the LLM call           {percentiles(pre_llm)}   (retrieval, prompt assembly)")
        print(f"    HTTP, SSE, LLM client         {percentiles(transport)}")
        print(f"LLM alone, first token            {percentiles(llm_ttft)}   (same prompts, direct, uncached)")
        print(f"  /query minus LLM alone          {percentiles(difference)}   (two calls: noisy)")
        print(
            json.dumps(
                {
                    "search_p50_ms": statistics.median(search_ms),
                    "ttft_p50_ms": statistics.median(ragsvc_ttft),
                    "llm_ttft_p50_ms": statistics.median(llm_ttft),
                    "ragsvc_share_p50_ms": statistics.median(share),
                    "ragsvc_share_p95_ms": sorted(share)[min(len(share) - 1, round(0.95 * (len(share) - 1)))],
                    "pre_llm_p50_ms": statistics.median(pre_llm),
                }
            )
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        llm_process.terminate()


if __name__ == "__main__":
    main()
