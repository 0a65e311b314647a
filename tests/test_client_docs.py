"""The examples in docs/guides/clients.md, run as written against a server this module started: the doc's
`http://127.0.0.1:8000` becomes that server's address, its collection `ragsvc-docs` holds the sample docs."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import RAGSVC, SAMPLE_DOCS, module_assistant
from tests.openwebui import CONNECTION_HEADERS

PAGE = SAMPLE_DOCS / "guides" / "clients.md"
DOC_SERVER = "http://127.0.0.1:8000"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [code for lang, code in _FENCE.findall(PAGE.read_text()) if lang == language]


@pytest.fixture(scope="module")
def doc_server(tmp_path_factory: pytest.TempPathFactory, running_llm: str) -> Iterator[str]:
    yield from module_assistant(tmp_path_factory, running_llm, "ragsvc-docs")


@pytest.mark.slow
@pytest.mark.parametrize("example", range(2), ids=["openai", "openailike"])
def test_python_client_examples_print_a_cited_answer(doc_server: str, example: int):
    code = blocks("python")[example].replace(DOC_SERVER, doc_server)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    # The reply and the pages under it, the page asked about among them. SmolLM2, the tests' stand-in, may
    # write an answer with citations or its own "not available", a refusal shown with the closest pages.
    pages = re.search(r"^(Sources|Closest pages):$(.*)", result.stdout, re.MULTILINE | re.DOTALL)
    assert pages and "guides/collections.md" in pages.group(2)


@pytest.mark.slow
def test_continue_config_names_a_collection_as_an_openai_model(doc_server: str):
    (model,) = yaml.safe_load(blocks("yaml")[0])["models"]
    assert model["provider"] == "openai" and "chat" in model["roles"]
    # What Continue's openai provider sends: a chat completion at apiBase, with the model and the key.
    client = openai.OpenAI(base_url=model["apiBase"].replace(DOC_SERVER, doc_server), api_key=model["apiKey"])
    reply = client.chat.completions.create(
        model=model["model"], messages=[{"role": "user", "content": "How do I delete a collection?"}]
    )
    assert "guides/collections.md" in reply.choices[0].message.content


def test_open_webui_example_is_the_connection_the_live_test_runs():
    exports = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in blocks("bash")[0].splitlines()
        if line.startswith("export ")
    )
    assert exports["OPENAI_API_BASE_URLS"] == f"{DOC_SERVER}/v1"
    assert exports["ENABLE_OLLAMA_API"] == "False"
    assert json.loads(exports["OPENAI_API_CONFIGS"])["0"]["headers"] == CONNECTION_HEADERS


@pytest.mark.slow
def test_mcp_client_configs_connect_over_http_and_stdio(doc_server: str, tmp_path: Path):
    http_config, stdio_config = (json.loads(b)["mcpServers"]["ragsvc"] for b in blocks("json"))

    async def tools_over_http() -> set[str]:
        url = http_config["url"].replace(DOC_SERVER, doc_server)
        async with httpx2.AsyncClient(headers=http_config["headers"], timeout=120) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
                listed = await client.call_tool("list_collections", {})
                assert [c["name"] for c in listed.structured_content["collections"]] == ["ragsvc-docs"]
                return {t.name for t in (await client.list_tools()).tools}

    async def tools_over_stdio() -> set[str]:
        assert stdio_config["command"] == "ragsvc"
        env = {**stdio_config["env"], "RAGSVC_DATA_DIR": str(tmp_path / "stdio-data")}
        server = StdioServerParameters(command=RAGSVC, args=stdio_config["args"], env=env)
        async with Client(server, mode="legacy", read_timeout_seconds=120) as client:
            listed = await client.call_tool("list_collections", {})
            assert listed.structured_content["collections"] == []
            return {t.name for t in (await client.list_tools()).tools}

    tools = {"list_collections", "search", "ask", "read_section"}
    assert asyncio.run(tools_over_http()) == tools
    assert asyncio.run(tools_over_stdio()) == tools
