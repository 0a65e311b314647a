"""Query latency over HTTP: /search p50/p95 and streamed /query time-to-first-token, next to the LLM's own
time-to-first-token for the very prompt ragsvc built, measured in the same run; the difference is ragsvc's
share (retrieval, prompt assembly, HTTP, SSE).

Usage: python bench/query.py [--docs FOLDER] [--questions FILE] [--rounds N]
Starts llama-server (SmolLM2) and the ragsvc app (uvicorn in a thread, real HTTP on loopback), ingests FOLDER.
Both LLM calls are sent with the prompt uncached by llama-server (ragsvc's first, then the direct one with
cache_prompt off), so neither side gets a warm KV cache.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

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


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"p50 {statistics.median(values):7.1f} ms  p95 {p95:7.1f} ms"


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
    args = parser.parse_args()

    llm_port, app_port = free_port(), free_port()
    llm_process = start_llama_server(llm_port, context=4096)
    llm_url = f"http://127.0.0.1:{llm_port}/v1"
    wait_until_ready(llm_url, llm_process)
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="ragsvc-bench-")),
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
            f"{base}/collections/bench/ingest", json={"path": str(args.docs), "wait": True}
        ).json()
        summary = job["summary"]
        print(f"ingested {summary['files']} files, {summary['chunks_total']} chunks from {args.docs}")
        questions = [q.question for q in load_questions(args.questions) if q.answerable][: args.rounds]
        services = app.state.services

        search_ms = []
        for question in questions * 3:
            started = time.perf_counter()
            client.post(f"{base}/collections/bench/search", json={"question": question}).raise_for_status()
            search_ms.append((time.perf_counter() - started) * 1000)

        ragsvc_ttft, llm_ttft = [], []
        for question in questions:
            body = {"question": question, "stream": True}
            ragsvc_ttft.append(
                first_token_ms(client, f"{base}/collections/bench/query", body, RAGSVC_TOKEN)
            )
            prompt = prepare(services, "bench", question)
            direct = {
                "model": settings.llm_model,
                "messages": [{"role": m.role.value, "content": m.content} for m in prompt.messages],
                "max_tokens": prompt.max_tokens,
                "stream": True,
                "temperature": 0,
                "cache_prompt": False,
            }
            llm_ttft.append(first_token_ms(client, f"{llm_url}/chat/completions", direct, LLM_TOKEN))

        share = [r - d for r, d in zip(ragsvc_ttft, llm_ttft, strict=True)]
        print(f"/search over HTTP            {percentiles(search_ms)}   ({len(search_ms)} requests)")
        print(f"/query stream, first token   {percentiles(ragsvc_ttft)}   ({len(questions)} questions)")
        print(f"LLM alone, first token       {percentiles(llm_ttft)}   (same prompts, uncached)")
        print(f"ragsvc's share of TTFT       {percentiles(share)}")
        print(
            json.dumps(
                {
                    "search_p50_ms": statistics.median(search_ms),
                    "ragsvc_share_p50_ms": statistics.median(share),
                }
            )
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        llm_process.terminate()


if __name__ == "__main__":
    main()
