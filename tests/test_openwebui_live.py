"""A real Open WebUI in front of ragsvc: driven through its HTTP API, and once in headless Chromium (Debian's
`chromium`, launched by playwright through executable_path; no browser is downloaded).

ragsvc runs with the real llama-server and the sample docs; the docs' links point at the docs site ragsvc
renders from them (/site/, RAGSVC_DOCS_SITE_DIR), as in the demo, so that a link can be followed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SAMPLE_DOCS, _serve
from tests.openwebui import OpenWebUI, running_open_webui
from tests.test_openwebui import metric

QUESTION = "How many dimensions do the embedding vectors have?"
GOLD = "concepts/embedding-models.md"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = REPO / "test-output" / "open-webui"


@pytest.fixture(scope="module")
def linked_assistant(tmp_path_factory: pytest.TempPathFactory, running_llm: str) -> Iterator[str]:
    """`ragsvc serve` with the real llama-server and the sample docs as 'docs', linked to its own docs site."""
    data_dir = tmp_path_factory.mktemp("ragsvc") / "data"
    env = {
        "RAGSVC_DATA_DIR": str(data_dir),
        "RAGSVC_LLM_BASE_URL": running_llm,
        "RAGSVC_DOCS_SITE_DIR": str(SAMPLE_DOCS),
        # Module-scoped: made before the per-test environment, so it names its own ingest root.
        "RAGSVC_INGEST_ROOTS": str(SAMPLE_DOCS),
    }
    for url in _serve(data_dir, env):
        body = {"path": str(SAMPLE_DOCS), "wait": True, "docs_base_url": f"{url}/site"}
        response = httpx.post(f"{url}/collections/docs/ingest", json=body, timeout=600)
        assert response.status_code == 200, response.text
        yield url


@pytest.fixture(scope="module")
def docs_site(linked_assistant: str) -> str:
    return f"{linked_assistant}/site"


@pytest.fixture(scope="module")
def open_webui(linked_assistant: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenWebUI]:
    with running_open_webui(linked_assistant, tmp_path_factory.mktemp("open-webui")) as started:
        yield started


@pytest.mark.slow
def test_open_webui_lists_the_collection_and_its_api_returns_ragsvc_sources(
    open_webui: OpenWebUI, docs_site: str
):
    token = open_webui.sign_in()
    models = open_webui.api("GET", "/api/models", token).json()["data"]
    assert "docs" in [m["id"] for m in models]

    body = {"model": "docs", "messages": [{"role": "user", "content": QUESTION}], "stream": False}
    reply = open_webui.api("POST", "/api/chat/completions", token, json=body).json()
    content = reply["choices"][0]["message"]["content"]
    assert content.strip() and "Sources:" not in content
    chip = reply["sources"][0]
    assert chip["metadata"][0]["file"] == GOLD and "384" in chip["document"][0]
    assert chip["metadata"][0]["source_url"].startswith(f"{docs_site}/concepts/embedding-models/#")

    body["stream"] = True
    streamed = open_webui.api("POST", "/api/chat/completions", token, json=body).text
    chunks = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
    events = [c["event"]["data"] for c in chunks if c.get("event", {}).get("type") == "source"]
    assert events and events[0]["metadata"][0]["file"] == GOLD  # passed on to Open WebUI's own API clients


@pytest.mark.slow
def test_open_webui_title_call_reaches_the_llm_but_not_retrieval(
    open_webui: OpenWebUI, linked_assistant: str
):
    token = open_webui.sign_in()
    retrievals = metric(linked_assistant, "ragsvc_retrieval_seconds_count")
    titles = metric(linked_assistant, "ragsvc_openwebui_tasks_total", '{task="title_generation"}')
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "The vectors have 384 dimensions [1]."},
    ]
    body = {"model": "docs", "messages": messages, "chat_id": "local"}
    response = open_webui.api("POST", "/api/v1/tasks/title/completions", token, json=body).json()
    assert response["choices"][0]["message"]["content"].strip()
    assert metric(linked_assistant, "ragsvc_retrieval_seconds_count") == retrievals
    assert metric(linked_assistant, "ragsvc_openwebui_tasks_total", '{task="title_generation"}') == titles + 1


@pytest.mark.slow
def test_open_webui_page_shows_the_answer_its_source_chips_and_a_link_to_the_cited_section(
    open_webui: OpenWebUI, docs_site: str
):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: scripts/test.sh installs it (apt-get install -y chromium)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(open_webui.url, timeout=120_000)
            page.locator("#chat-input").wait_for(timeout=120_000)
            whats_new = page.get_by_role("button", name="Okay, Let's Go!")
            if whats_new.is_visible():  # the release notes, on a first visit
                whats_new.click()
            page.get_by_role("button", name=re.compile("^Selected model")).first.click()
            page.get_by_role("option", name="Select docs model").click()
            page.locator("#chat-input").click()
            page.keyboard.type(QUESTION)
            page.keyboard.press("Enter")

            # The sources come with the end of the answer.
            sources = page.get_by_role("button", name=re.compile(r"^Toggle \d+ sources?$"))
            expect(sources.last).to_be_visible(timeout=300_000)
            answer = page.locator("#response-content-container").last
            expect(answer).to_contain_text(re.compile(r"\w+ \w+"))  # SmolLM2's words, whatever they are
            sources.last.click()
            # The chips, numbered as the answer cites them, each naming the file and its section trail.
            chip = page.get_by_role("button", name=f"View source: 1 {GOLD} — ")
            expect(chip).to_be_visible()
            chip.click()
            # The chip opens the passage the answer read, under a link to the section it comes from.
            modal = page.get_by_role("dialog")
            expect(modal).to_contain_text("384 dimensions")
            link = modal.get_by_role("link", name=f"{GOLD} — ")
            expect(link).to_have_attribute(
                "href", re.compile(f"^{re.escape(docs_site)}/concepts/embedding-models/#")
            )
            page.screenshot(path=str(SCREENSHOTS / "answer-with-source-chips.png"), full_page=True)
            with page.context.expect_page() as opened:
                link.click()
            section = opened.value
            section.wait_for_load_state()
            anchor = (link.get_attribute("href") or "").split("#")[1]
            assert section.url.startswith(f"{docs_site}/concepts/embedding-models/")
            expect(section.locator(f'[id="{anchor}"]')).to_have_count(1)  # the cited section is on the page
        except Exception:
            page.screenshot(path=str(SCREENSHOTS / "failure.png"), full_page=True)
            shutil.copy(open_webui.log, SCREENSHOTS / "open-webui.log")
            raise
        finally:
            browser.close()
