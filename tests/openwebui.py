"""A real Open WebUI (PyPI `open-webui`, pinned, in a venv of its own) started offline against a ragsvc that
the test started, and driven through its HTTP API. Reusable: `running_open_webui(ragsvc_url, folder, env=...)`.

Its own embedding model is never loaded (BYPASS_EMBEDDING_AND_RETRIEVAL: ragsvc does the retrieval), nothing it
would reach is left at a default URL, and its connection to ragsvc sends `X-OpenWebUI-Task: {{TASK}}`, the
header ragsvc's docs ask for.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port

# What every Open WebUI the tests start sends to ragsvc beside its key (see docs/guides/clients.md).
CONNECTION_HEADERS = {"X-OpenWebUI-Task": "{{TASK}}"}
START_TIMEOUT = 420  # seconds: about 1-2 minutes on two quiet cores, more while other work shares them


def open_webui_venv() -> Path:
    """The pinned Open WebUI venv in the machine's ragsvc cache, installed by the script on first use."""
    result = subprocess.run(
        [str(REPO / "scripts" / "install-openwebui.sh")], capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class OpenWebUI:
    url: str
    log: Path

    def sign_in(self, email: str = "", password: str = "") -> str:
        """A session token; with WEBUI_AUTH=False any credentials sign in its single admin."""
        response = httpx.post(
            f"{self.url}/api/v1/auths/signin", json={"email": email, "password": password}, timeout=60
        )
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def sign_up(self, name: str, email: str, password: str) -> str:
        """The first user signed up is its admin (with WEBUI_AUTH=True); returns their token."""
        body = {"name": name, "email": email, "password": password}
        response = httpx.post(f"{self.url}/api/v1/auths/signup", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def add_user(self, admin_token: str, name: str, email: str, password: str, role: str = "user") -> str:
        """A user the admin adds; returns their Open WebUI user id."""
        body = {"name": name, "email": email, "password": password, "role": role}
        response = self.api("POST", "/api/v1/auths/add", admin_token, json=body)
        return response.json()["id"]

    def api(self, method: str, path: str, token: str, **kwargs: object) -> httpx.Response:
        response = httpx.request(
            method, f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=600, **kwargs
        )
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response


@contextmanager
def running_open_webui(
    ragsvc_url: str, folder: Path, *, api_key: str = "unused", env: dict[str, str] | None = None
) -> Iterator[OpenWebUI]:
    """Open WebUI on a free port with ragsvc (`ragsvc_url`, without /v1) as its only connection.

    `env` adds or overrides its settings, e.g. WEBUI_AUTH=True with ENABLE_FORWARD_USER_INFO_HEADERS=True and
    FORWARD_USER_INFO_HEADER_JWT_SECRET for signed per-user headers."""
    venv = open_webui_venv()
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "DATA_DIR": str(folder / "data"),
        "WEBUI_SECRET_KEY": secrets.token_hex(32),
        "WEBUI_AUTH": "False",
        "ENABLE_OLLAMA_API": "False",
        "OPENAI_API_BASE_URLS": f"{ragsvc_url}/v1",
        "OPENAI_API_KEYS": api_key,
        "OPENAI_API_CONFIGS": json.dumps({"0": {"enable": True, "headers": CONNECTION_HEADERS}}),
        # Offline: no model hub, no update check, no telemetry; ragsvc retrieves, so no embedding model.
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "BYPASS_EMBEDDING_AND_RETRIEVAL": "True",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        "ANONYMIZED_TELEMETRY": "False",
        "DO_NOT_TRACK": "True",
        "SCARF_NO_ANALYTICS": "True",
        "ENABLE_WEB_SEARCH": "False",
        "ENABLE_CODE_INTERPRETER": "False",
        "ENABLE_IMAGE_GENERATION": "False",
        # Its title call is what the tests check; tags and follow-ups would be two more LLM calls per answer.
        "ENABLE_TAGS_GENERATION": "False",
        "ENABLE_FOLLOW_UP_GENERATION": "False",
    }
    log = folder / "open-webui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(venv / "bin" / "open-webui"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env={**os.environ, **settings, **(env or {})},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                assert process.poll() is None, log.read_text()[-4000:]
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "open-webui did not start:\n" + log.read_text()[-4000:]
                time.sleep(1)
            yield OpenWebUI(url=url, log=log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
