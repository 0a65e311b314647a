"""One operation, the same result and the same error from every front end: the CLI inline, the CLI through a
running server, and the REST API (each on a data dir of its own, with the LLM down). The fast variant runs
the same operations in this process: the service layer as the CLI calls it, the typed HTTP client and raw
REST requests, both against the app on a TestClient."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from indexes.errors import RagsvcError
from ragsvc.cli_backend import Inline
from ragsvc.cli_errors import CLI_ERRORS, FAILED
from ragsvc.client import Client
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings
from tests.conftest import _serve, app_client, free_port, run_cli

PAGES = {
    "calibration.md": "# Calibration\n\nCalibrate the widget with widgetctl calibrate --depth 7.\n",
    "release-notes.md": "# Release notes\n\nVersion 3 adds the turbo flag to the widget.\n",
    "faq.txt": "Why is the widget loud? The fan runs at full speed until calibration.\n",
}
QUESTION = "How do I calibrate the widget?"
SUMMARY_FIELDS = ("collection", "files", "added", "updated", "unchanged", "removed", "skipped", "failed")

Outcome = tuple[Any, ...]  # ("ok", result) or ("error", cli exit status, message)


def error_outcome(code: str, message: str) -> Outcome:
    """An error as every front end must give it: the CLI's exit status for its code, and its message."""
    return ("error", CLI_ERRORS.get(code, (FAILED, None))[0], message)


def summary_outcome(summary: dict[str, Any]) -> Outcome:
    kept = {k: summary[k] for k in SUMMARY_FIELDS} | {"chunks": summary["chunks_total"]}
    kept["index_built"] = (summary.get("index_build") or {}).get("built")
    return ("ok", kept)


def results_outcome(results: list[dict[str, Any]]) -> Outcome:
    return ("ok", [(r["source"], r["section"], round(r["score"], 4), r["text"]) for r in results])


class FrontEnd(Protocol):
    def ingest(self, name: str, folder: Path) -> Outcome: ...

    def search(self, name: str, question: str) -> Outcome: ...

    def ask(self, name: str, question: str) -> Outcome: ...

    def delete(self, name: str) -> Outcome: ...


class Cli:
    """`ragsvc` commands in a process of their own, on one data dir (inline, or through its server)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def _run(self, *args: str) -> tuple[int, str, str]:
        done = run_cli(*args, env=self.env)
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, done.stdout, done.stderr

    def _outcome(self, status: int, stdout: str, stderr: str, ok: Callable[[Any], Outcome]) -> Outcome:
        if status == 0:
            return ok(json.loads(stdout))
        message = next(line for line in stderr.splitlines() if line.startswith("error: "))
        return ("error", status, message.removeprefix("error: "))

    def ingest(self, name: str, folder: Path) -> Outcome:
        return self._outcome(*self._run("ingest", str(folder), "-c", name, "--json"), summary_outcome)

    def search(self, name: str, question: str) -> Outcome:
        return self._outcome(*self._run("search", question, "-c", name, "--json"), results_outcome)

    def ask(self, name: str, question: str) -> Outcome:
        return self._outcome(*self._run("ask", question, "-c", name, "--json"), lambda a: ("ok", a["answer"]))

    def delete(self, name: str) -> Outcome:
        status, stdout, stderr = self._run("collections", "delete", name)
        return ("ok", None) if status == 0 else self._outcome(status, stdout, stderr, lambda _: ("ok", None))


class Rest:
    """Plain requests to the REST API, as any HTTP client makes them."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def _outcome(self, response: httpx.Response, ok: Callable[[Any], Outcome]) -> Outcome:
        if response.status_code >= 400:
            error = response.json()["error"]
            return error_outcome(error["code"], error["message"])
        return ok(response.json() if response.content else None)

    def ingest(self, name: str, folder: Path) -> Outcome:
        response = self.http.post(f"/collections/{name}/ingest", json={"path": str(folder), "wait": True})
        if response.status_code < 400 and response.json()["status"] == "failed":
            error = response.json()["error"]
            return error_outcome(error["code"], error["message"])
        return self._outcome(response, lambda job: summary_outcome(job["summary"]))

    def search(self, name: str, question: str) -> Outcome:
        response = self.http.post(f"/collections/{name}/search", json={"question": question})
        return self._outcome(response, lambda body: results_outcome(body["results"]))

    def ask(self, name: str, question: str) -> Outcome:
        response = self.http.post(f"/collections/{name}/query", json={"question": question})
        return self._outcome(response, lambda body: ("ok", body["answer"]))

    def delete(self, name: str) -> Outcome:
        return self._outcome(self.http.delete(f"/collections/{name}"), lambda _: ("ok", None))


class Calls:
    """The calls the CLI makes, in this process: the service layer (inline) or the typed HTTP client."""

    def __init__(self, backend: Inline | Client) -> None:
        self.backend = backend

    def _outcome(self, call: Callable[[], Outcome]) -> Outcome:
        try:
            return call()
        except RagsvcError as exc:
            return error_outcome(exc.code, exc.message)

    def ingest(self, name: str, folder: Path) -> Outcome:
        return self._outcome(
            lambda: summary_outcome(self.backend.ingest_folder(name, folder).model_dump(mode="json"))
        )

    def search(self, name: str, question: str) -> Outcome:
        return self._outcome(
            lambda: results_outcome([s.model_dump() for s in self.backend.search(name, question)])
        )

    def ask(self, name: str, question: str) -> Outcome:
        return self._outcome(lambda: ("ok", self.backend.ask(name, question).answer))

    def delete(self, name: str) -> Outcome:
        return self._outcome(lambda: ("ok", self.backend.delete_collection(name)))


OPERATIONS: dict[str, Callable[[FrontEnd, Path], Outcome]] = {
    "ingest a folder": lambda fe, docs: fe.ingest("kb", docs),
    "ingest it again": lambda fe, docs: fe.ingest("kb", docs),
    "ingest a missing folder": lambda fe, docs: fe.ingest("other", docs / "absent"),
    "search": lambda fe, docs: fe.search("kb", QUESTION),
    "search a missing collection": lambda fe, docs: fe.search("nope", QUESTION),
    "ask with the LLM down": lambda fe, docs: fe.ask("kb", QUESTION),
    "delete a missing collection": lambda fe, docs: fe.delete("nope"),
    "a bad collection name": lambda fe, docs: fe.ingest("bad name!", docs),
}


def outcomes(front_ends: dict[str, FrontEnd], docs: Path) -> dict[str, dict[str, Outcome]]:
    """Every operation, in order, on every front end."""
    return {op: {name: run(fe, docs) for name, fe in front_ends.items()} for op, run in OPERATIONS.items()}


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("front-ends") / "docs"
    folder.mkdir()
    for name, text in PAGES.items():
        (folder / name).write_text(text)
    return folder


def _env(data_dir: Path, llm_url: str, docs: Path) -> dict[str, str]:
    # The servers may read the test's folders: which ones is the operator's choice (RAGSVC_INGEST_ROOTS).
    return {
        "RAGSVC_DATA_DIR": str(data_dir),
        "RAGSVC_LLM_BASE_URL": llm_url,
        "RAGSVC_LLM_RETRIES": "0",
        "RAGSVC_INGEST_ROOTS": str(docs.parent),
    }


@pytest.fixture(scope="module")
def through_processes(tmp_path_factory: pytest.TempPathFactory, docs: Path) -> Iterator[dict]:
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: the LLM is down
    inline, served, rest = (tmp_path_factory.mktemp(f) / "data" for f in ("inline", "served", "rest"))
    for data_dir in (served, rest):
        data_dir.mkdir()
    servers = [_serve(served, _env(served, down, docs)), _serve(rest, _env(rest, down, docs))]
    try:
        served_url, rest_url = (next(server) for server in servers)
        with httpx.Client(base_url=rest_url, timeout=120) as http:
            front_ends: dict[str, FrontEnd] = {
                "cli inline": Cli(_env(inline, down, docs)),
                "cli through a server": Cli(_env(served, down, docs)),
                "rest api": Rest(http),
            }
            yield outcomes(front_ends, docs)
    finally:
        for server in servers:
            server.close()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory, docs: Path) -> Iterator[dict]:
    down = f"http://127.0.0.1:{free_port()}/v1"

    def settings(name: str) -> Settings:
        data_dir = tmp_path_factory.mktemp(name) / "data"
        return Settings(data_dir=data_dir, llm_base_url=down, llm_retries=0, ingest_roots=[docs.parent])

    inline = Inline(open_runtime(settings("inline")))
    try:
        with app_client(settings("client")) as served, app_client(settings("rest")) as rest:
            front_ends: dict[str, FrontEnd] = {
                "service layer": Calls(inline),
                "typed client": Calls(Client("http://testserver", http=served)),
                "rest api": Rest(rest),
            }
            yield outcomes(front_ends, docs)
    finally:
        inline.close()


def _same(seen: dict[str, Outcome]) -> Outcome:
    first, *others = seen.values()
    assert all(other == first for other in others), seen
    return first


@pytest.mark.slow
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_front_end_gives_the_same_result_and_error(through_processes: dict, operation: str):
    _check(operation, _same(through_processes[operation]))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_in_process_front_ends_give_the_same_result_and_error(in_process: dict, operation: str):
    _check(operation, _same(in_process[operation]))


def _check(operation: str, outcome: Outcome) -> None:
    """What the one outcome every front end gave must be, so that agreeing on a wrong answer fails too."""
    if operation == "ingest a folder":
        assert outcome[0] == "ok" and sorted(outcome[1]["added"]) == sorted(PAGES)
        assert outcome[1]["failed"] == [] and outcome[1]["chunks"] == 3
    elif operation == "ingest it again":
        assert outcome[0] == "ok" and sorted(outcome[1]["unchanged"]) == sorted(PAGES)
    elif operation == "ingest a missing folder":
        assert outcome[:2] == ("error", 2) and outcome[2].endswith("absent is not a folder")
    elif operation == "search":
        assert outcome[0] == "ok" and outcome[1][0][0] == "calibration.md"
    elif operation in ("search a missing collection", "delete a missing collection"):
        assert outcome == ("error", 1, "collection 'nope' does not exist")
    elif operation == "ask with the LLM down":
        assert outcome[:2] == ("error", 1) and "is unreachable" in outcome[2]
    elif operation == "a bad collection name":
        assert outcome[:2] == ("error", 2) and outcome[2].startswith("invalid collection name 'bad name!'")
