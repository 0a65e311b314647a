"""The demo as the README runs it answers the README's example questions correctly and cites the right page,
with the model scripts/run.sh serves by default (Qwen2.5-Coder-1.5B, installed on demand like run.sh does);
a question the docs do not answer is refused with the closest pages and no sources. Facts and citations are
asserted, never timing (bench/demo_answers.py measures that)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eval.readme_questions import README_QUESTIONS, ReadmeQuestion
from ragsvc.llm_models import install_model, known_model, resolve
from ragsvc.llm_server import start_llama_server, wait_until_ready
from ragsvc.settings import Settings
from tests.conftest import SAMPLE_DOCS, _serve, free_port

DEMO_MODEL = "qwen2.5-1.5b"  # scripts/run.sh's default
OFF_TOPIC = "How do I bake sourdough bread?"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-server with the demo's model, installed first when missing (a 1.1 GB download, once per machine)."""
    cache = Settings().cache_dir
    install_model(known_model(DEMO_MODEL), cache)
    served = resolve(DEMO_MODEL, cache)
    port = free_port()
    log = tmp_path_factory.mktemp("demo-llm") / "llama-server.log"
    process = start_llama_server(port, model=served.path, context=served.context, alias=served.alias, log=log)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(base_url, process, timeout=300, log=log)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_llm: str) -> Iterator[str]:
    """`ragsvc serve` as scripts/run.sh starts it: the docs as 'ragsvc-docs', linked to its own /site/."""
    data_dir: Path = tmp_path_factory.mktemp("demo") / "data"
    env = {
        "RAGSVC_DATA_DIR": str(data_dir),
        "RAGSVC_LLM_BASE_URL": demo_llm,
        "RAGSVC_DOCS_SITE_DIR": str(SAMPLE_DOCS),
        "RAGSVC_INGEST_ROOTS": str(SAMPLE_DOCS),
        "RAGSVC_ANSWER_CHUNKS_PER_SOURCE": "0",  # the default, which tests/conftest.py sets aside for SmolLM2
        # the default answer check, which tests/conftest.py turns off for SmolLM2
        "RAGSVC_ANSWER_CHECK_THRESHOLD": str(Settings.model_fields["answer_check_threshold"].default),
    }
    for url in _serve(data_dir, env):
        body = {"path": str(SAMPLE_DOCS), "wait": True, "docs_base_url": f"{url}/site"}
        response = httpx.post(f"{url}/collections/ragsvc-docs/ingest", json=body, timeout=1800)
        assert response.status_code == 200, response.text
        yield url


@pytest.mark.parametrize("asked", README_QUESTIONS, ids=lambda q: q.question)
def test_the_readme_questions_get_correct_answers_citing_the_right_page(demo: str, asked: ReadmeQuestion):
    response = httpx.post(
        f"{demo}/collections/ragsvc-docs/query", json={"question": asked.question}, timeout=1800
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    sources = [s["source"] for s in answer["sources"]]
    assert not answer["refused"], answer
    assert asked.correct(answer["answer"]), answer["answer"]
    assert asked.cites_right_page(answer["answer"], sources), (answer["answer"], sources)
    # The citations carry the deep links the demo serves.
    cited = next(s for s in answer["sources"] if s["source"] in asked.pages)
    assert cited["link"].startswith(f"{demo}/site/")
    assert httpx.get(cited["link"], timeout=60).status_code == 200


def test_a_question_the_docs_do_not_answer_is_refused_with_the_closest_pages(demo: str):
    answer = httpx.post(
        f"{demo}/collections/ragsvc-docs/query", json={"question": OFF_TOPIC}, timeout=1800
    ).json()
    assert answer["refused"] and answer["sources"] == [] and answer["closest_pages"], answer
    body = {"model": "ragsvc-docs", "messages": [{"role": "user", "content": OFF_TOPIC}]}
    chat = httpx.post(f"{demo}/v1/chat/completions", json=body, timeout=1800).json()
    content = chat["choices"][0]["message"]["content"]
    assert "Sources:" not in content and "\n\nClosest pages:\n- " in content, content
