"""The demo as the README runs it, asked the README's example questions: correct? cites the right page? time to
first token and total time of each answer, per local model.

Usage: PYTHONPATH=. python bench/demo_answers.py [--model smollm2] [--model qwen2.5-1.5b] [--rounds N]
For each model: `ragsvc llm serve --model M` (its default context and threads), `ragsvc ingest docs` into a fresh
data dir with the docs site's links, `ragsvc serve` with the docs site, then each question streamed through
POST /collections/ragsvc-docs/query (SSE) as a client would, one after the other. Prints the machine and its
load average before and after, since the figures depend on both.
"""

# ruff: noqa: E402 - sys.path is fixed before the project's imports

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx

from eval.readme_questions import README_QUESTIONS
from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
RAGSVC = str(Path(sys.executable).with_name("ragsvc"))
COLLECTION = "ragsvc-docs"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{cpu}, {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready in {timeout} s")


@contextmanager
def started(args: list[str], env: dict[str, str], ready: str, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(ready, process)
            yield
        finally:
            process.terminate()
            process.wait(timeout=60)


def ask(base: str, question: str) -> dict[str, object]:
    """One streamed answer: its text, sources, and the client's time to first token and to the end."""
    started_at = time.perf_counter()
    first = None
    event = ""
    result: dict[str, object] = {}
    body = {"question": question, "stream": True}
    with httpx.stream("POST", f"{base}/collections/{COLLECTION}/query", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if event == "token" and first is None and data["text"].strip():
                    first = time.perf_counter() - started_at
                elif event == "sources":
                    result["sources"] = [s["source"] for s in data["sources"]]
                    result["closest_pages"] = [s["source"] for s in data.get("closest_pages", [])]
                elif event == "done":
                    result.update(data)
                elif event == "error":
                    raise SystemExit(f"error event: {data}")
    result["ttft"] = first
    result["total"] = time.perf_counter() - started_at
    return result


def run_model(model: str, rounds: int, work: Path) -> None:
    data_dir = work / f"data-{model}"
    llm_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAGSVC_DATA_DIR": str(data_dir),
        "RAGSVC_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
        "RAGSVC_DOCS_SITE_DIR": str(REPO / "docs"),
    }
    site = f"http://127.0.0.1:{api_port}/site"
    llm = [RAGSVC, "llm", "serve", "--model", model, "--port", str(llm_port)]
    with started(llm, env, f"http://127.0.0.1:{llm_port}/health", work / f"llm-{model}.log"):
        subprocess.run(
            [RAGSVC, "ingest", str(REPO / "docs"), "--collection", COLLECTION, "--docs-base-url", site],
            env=env,
            check=True,
            capture_output=True,
        )
        api = [RAGSVC, "serve", "--port", str(api_port)]
        with started(api, env, f"http://127.0.0.1:{api_port}/healthz", work / f"api-{model}.log"):
            base = f"http://127.0.0.1:{api_port}"
            print(f"\n== {model}   ({machine()})")
            passed = 0
            for round_number in range(1, rounds + 1):
                for q in README_QUESTIONS:
                    r = ask(base, q.question)
                    answer = str(r.get("answer", ""))
                    sources = list(r.get("sources", []))  # type: ignore[arg-type]
                    correct, cited = q.correct(answer), q.cites_right_page(answer, sources)
                    passed += correct and cited
                    ttft = f"{r['ttft']:.1f} s" if r["ttft"] is not None else "-"
                    print(
                        f"[round {round_number}] {q.question}\n  correct: {correct}  cites right page: {cited}  "
                        f"refused: {r.get('refused')}  TTFT {ttft}  total {r['total']:.1f} s  "
                        f"tokens {r.get('usage', {}).get('completion_tokens')}\n  answer: {answer!r}\n"
                        f"  sources: {sources}  closest pages: {r.get('closest_pages')}"
                    )
            print(
                f"== {model}: {passed} of {rounds * len(README_QUESTIONS)} correct and cited   ({machine()})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", action="append", help="smollm2, qwen2.5-1.5b or a .gguf path; repeatable")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-answers-") as work:
        for model in args.model or ["smollm2", "qwen2.5-1.5b"]:
            run_model(model, args.rounds, Path(work))


if __name__ == "__main__":
    main()
