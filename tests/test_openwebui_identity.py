"""A real Open WebUI with one connection (one ragsvc key) to ragsvc, forwarding each signed-in user as a
signed JWT header (FORWARD_USER_INFO_HEADER_JWT_SECRET): two of its users each get their own rights and their
own budget in ragsvc. Driven through Open WebUI's HTTP API; no browser."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key
from ragsvc.access.limits import Limits, set_limits
from ragsvc.access.principals import create_group, create_user, grant
from ragsvc.service import ingestion
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings
from tests.conftest import _serve
from tests.openwebui import OpenWebUI, running_open_webui

QUESTION = "How many dimensions do the embedding vectors have?"
ANN, BOB = "ann@example.org", "bob@example.org"
PASSWORD = "a-long-test-password"


@pytest.fixture
def shared_connection(
    data_dir: Path, docs_template: Path, tmp_path: Path, running_llm: str
) -> Iterator[tuple[OpenWebUI, str, str]]:
    """ragsvc (auth on) with collections 'docs' and 'staff-notes', Open WebUI in front of it with one key;
    ann (group ap-a: 'docs' only, one request per window) and bob (group ap-u: both, ten). Yields Open WebUI,
    ragsvc's URL and an admin key of ragsvc."""
    shutil.copytree(docs_template, data_dir, symlinks=True)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "rota.md").write_text("# Rota\n\nThe on-call rota changes every Monday at nine.\n")
    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        ingestion.ingest_folder(runtime, LOCAL, "staff-notes", notes)
    finally:
        runtime.close()
    db = AccessDB(data_dir / ACCESS_DB)
    create_user(db, "root", admin=True)
    admin = create_key(db, "root", "admin").secret
    for group, limits in (("ap-a", Limits(rpm=1)), ("ap-u", Limits(rpm=10))):
        create_group(db, group)
        set_limits(db, "group", group, limits)
    grant(db, "group", "ap-a", "docs", "read")
    grant(db, "group", "ap-u", "*", "read")
    create_user(db, ANN, groups=["ap-a"])
    create_user(db, BOB, groups=["ap-u"])
    # The connection's own user: it lists every model for Open WebUI; chats run as the forwarded user.
    create_user(db, "open-webui")
    grant(db, "user", "open-webui", "*", "read")
    connection = create_key(db, "open-webui", "connection", forwards_identity=True).secret
    db.close()

    secret = secrets.token_urlsafe(32)
    env = {
        "RAGSVC_AUTH": "on",
        "RAGSVC_LLM_BASE_URL": running_llm,
        "RAGSVC_OPENWEBUI_JWT_SECRET": secret,
        "RAGSVC_RATE_WINDOW_SECONDS": "3600",  # the window does not end within the test
        "RAGSVC_LLM_TIMEOUT": "900",  # a loaded machine; the test is about who is charged, not speed
    }
    webui_env = {
        "WEBUI_AUTH": "True",
        "ENABLE_FORWARD_USER_INFO_HEADERS": "True",
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": secret,
        "BYPASS_MODEL_ACCESS_CONTROL": "True",  # its users see ragsvc's models; ragsvc decides what they read
        "ENABLE_SIGNUP": "True",
    }
    for url in _serve(data_dir, env):
        with running_open_webui(url, tmp_path / "open-webui", api_key=connection, env=webui_env) as webui:
            yield webui, url, admin


def chat(webui: OpenWebUI, token: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "stream": False}
    return httpx.post(
        f"{webui.url}/api/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )


@pytest.mark.slow
def test_two_open_webui_users_get_their_own_rights_and_budgets_through_one_connection(
    shared_connection: tuple[OpenWebUI, str, str],
):
    webui, ragsvc, admin = shared_connection
    admin_token = webui.sign_up("Admin", "admin@example.org", PASSWORD)
    for name, email in (("Ann", ANN), ("Bob", BOB)):
        webui.add_user(admin_token, name, email, PASSWORD)
    ann = webui.sign_in(ANN, PASSWORD)
    bob = webui.sign_in(BOB, PASSWORD)
    # Rights: Open WebUI asks for the models as the signed-in user, so each sees what they may read.
    assert {m["id"] for m in webui.api("GET", "/api/models", ann).json()["data"]} == {"docs"}
    assert {"docs", "staff-notes"} <= {m["id"] for m in webui.api("GET", "/api/models", bob).json()["data"]}
    first = chat(webui, ann, "docs")
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"].strip()
    assert chat(webui, bob, "staff-notes").status_code == 200
    # ann is told it does not exist: by ragsvc (404 collection_not_found) when Open WebUI passes the call on,
    # or by Open WebUI itself when its latest model list was hers.
    hidden = chat(webui, ann, "staff-notes")
    assert hidden.status_code == 404 and "on-call" not in hidden.text, hidden.text

    # Budgets: ann's group allows one request per window, and it is spent; bob's allows ten, his are his own.
    refused = chat(webui, ann, "docs")
    assert refused.status_code == 429 and "requests per minute limit reached for user ann@example.org" in (
        refused.text
    )
    assert chat(webui, bob, "docs").status_code == 200

    usage = httpx.get(
        f"{ragsvc}/admin/usage?by=user",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=60,
    ).json()
    requests = {row["user"]: row["requests"] for row in usage}
    assert requests == {ANN: 1, BOB: 2}, usage  # nothing charged to the connection's own user
