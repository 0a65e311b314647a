"""Jobs that survive a crash: one job-store contract over SQLite and Redis, the queue's at-least-once delivery
on both, two Redis workers sharing a queue while one is SIGKILLed mid-job, and `ragsvc serve` SIGKILLed while
parsing, while embedding and between writing a document's new chunks and dropping its old ones."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from indexes.errors import InvalidRequest
from ingest.progress import IngestProgress, Progress
from ragsvc.jobs.queue import JobHandler, JobQueue, open_job_queue
from ragsvc.jobs.records import Job, JobError, JobNotFound, JobStatus, JobStore
from ragsvc.jobs.redis_store import RedisJobStore
from ragsvc.jobs.sqlite_store import SqliteJobStore
from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL, Grant, Principal, Right
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings
from tests.conftest import RAGSVC, REPO, app_client, free_port, run_cli, wait_for_job
from tests.job_worker import events_key


@dataclass
class Backend:
    """Where jobs live: the embedded SQLite default, or Redis; each `store()` is a new connection, as another
    process would open."""

    kind: str
    data_dir: Path
    redis_url: str | None
    name: str

    def store(self) -> JobStore:
        if self.redis_url:
            return RedisJobStore(self.redis_url, self.name)
        return SqliteJobStore(self.data_dir / "jobs.sqlite")

    def queue(self, handlers: dict[str, JobHandler], lease_seconds: float = 30.0) -> JobQueue:
        return open_job_queue(
            self.data_dir, handlers, redis_url=self.redis_url, name=self.name, lease_seconds=lease_seconds
        )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest, data_dir: Path) -> Backend:
    data_dir.mkdir(parents=True, exist_ok=True)
    redis_url = request.getfixturevalue("redis_server") if request.param == "redis" else None
    return Backend(request.param, data_dir, redis_url, f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(backend: Backend) -> Iterator[JobStore]:
    opened = backend.store()
    yield opened
    opened.close()


def _wait_for(predicate: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


# --- the store contract, on both backends ---


def test_store_saves_gets_and_lists_jobs(store: JobStore):
    first = store.save(Job(kind="probe", collection="a", params={"path": "/docs"}))
    second = store.save(Job(kind="probe", collection="b", status=JobStatus.done))
    got = store.get(first.id)
    assert (got.kind, got.collection, got.params, got.status) == ("probe", "a", {"path": "/docs"}, "queued")
    assert [j.id for j in store.list()] == [first.id, second.id]
    assert [j.id for j in store.list("a")] == [first.id]
    assert [j.id for j in store.list(statuses=(JobStatus.done,))] == [second.id]
    with pytest.raises(JobNotFound):
        store.get("nope")


def test_a_job_record_stored_before_progress_was_one_object_still_reads():
    old = {"kind": "ingest_folder", "collection": "kb", "status": "done", "files_done": 3, "files_total": 3}
    job = Job.model_validate_json(json.dumps(old | {"chunks_written": 9, "failures": 1}))
    assert job.progress == IngestProgress(
        phase="done", files_done=3, files_total=3, chunks_written=9, failed=1
    )


def test_a_job_error_stored_as_one_string_reads_as_code_and_message():
    old = {"kind": "ingest_folder", "collection": "kb", "status": "failed"}
    coded = Job.model_validate_json(json.dumps(old | {"error": "invalid_request: /x is not a folder"}))
    assert coded.error == JobError(code="invalid_request", message="/x is not a folder")
    abandoned = Job.model_validate_json(json.dumps(old | {"error": "abandoned: its worker died 5 times"}))
    assert abandoned.error == JobError(code="abandoned", message="its worker died 5 times")
    bare = Job.model_validate_json(json.dumps(old | {"error": "Worker died: boom"}))
    assert bare.error == JobError(code="internal_error", message="Worker died: boom")


def test_a_job_keeps_its_submitter_in_the_store_and_never_shows_it(store: JobStore):
    caller = Principal(user="ana", groups=("physics",), grants=(Grant(collection="kb", right=Right.write),))
    job = store.save(Job(kind="probe", collection="kb", principal=caller))
    assert store.get(job.id).principal == caller
    assert "principal" not in job.model_dump() and "ana" not in job.model_dump_json()


def test_a_job_is_held_by_the_worker_that_claimed_it_and_no_other(backend: Backend, store: JobStore):
    job = store.save(Job(kind="probe", collection="kb"))
    claimed = store.claim(job.id, "w1", 30)
    assert claimed is not None
    assert (claimed.status, claimed.attempts, claimed.worker) == ("running", 1, "w1")
    other = backend.store()
    assert other.claim(job.id, "w2", 30) is None
    assert store.renew(job.id, "w1", 30) and not other.renew(job.id, "w2", 30)
    assert not other.update(claimed.model_copy(update={"status": JobStatus.done}), "w2")
    claimed.progress = IngestProgress(phase="parsing", files_done=3, files_total=9, failed=1)
    assert store.update(claimed, "w1")
    assert store.get(job.id).progress == claimed.progress and store.orphans() == []
    other.close()


def test_a_lapsed_lease_lets_another_worker_take_the_job_and_shuts_out_the_first(
    backend: Backend, store: JobStore
):
    job = store.save(Job(kind="probe", collection="kb"))
    first = store.claim(job.id, "w1", 0.3)
    assert first is not None
    # The state a SIGKILLed worker leaves: a claim whose heartbeat stopped.
    _wait_for(lambda: [j.id for j in store.orphans()] == [job.id], 10, "the lease to lapse")
    other = backend.store()
    second = other.claim(job.id, "w2", 30)
    assert second is not None and (second.attempts, second.worker) == (2, "w2")
    assert not store.renew(job.id, "w1", 30)
    first.status = JobStatus.done
    assert not store.update(first, "w1")
    assert (store.get(job.id).status, store.get(job.id).worker) == ("running", "w2")
    other.close()


def test_a_finished_job_frees_its_lease_and_is_never_claimed_again(store: JobStore):
    job = store.save(Job(kind="probe", collection="kb"))
    claimed = store.claim(job.id, "w1", 30)
    assert claimed is not None
    claimed.status = JobStatus.done
    assert store.update(claimed, "w1")
    assert store.claim(job.id, "w2", 30) is None and store.claim(job.id, "w1", 30) is None
    assert not store.renew(job.id, "w1", 30)
    assert store.orphans() == [] and store.get(job.id).status == "done"


def test_concurrent_claims_of_one_job_have_exactly_one_winner(backend: Backend, store: JobStore):
    contenders = 6
    stores = [backend.store() for _ in range(contenders)]
    jobs = [store.save(Job(kind="probe", collection="kb")) for _ in range(15)]
    try:
        with ThreadPoolExecutor(contenders) as pool:
            for job in jobs:
                start = threading.Barrier(contenders)

                def contend(i: int, job_id: str = job.id, start: threading.Barrier = start) -> bool:
                    start.wait()
                    return stores[i].claim(job_id, f"w{i}", 30) is not None

                assert sum(pool.map(contend, range(contenders))) == 1
    finally:
        for opened in stores:
            opened.close()
    assert all(j.attempts == 1 for j in store.list())


# --- the queue on both backends: real Huey, handlers that count their runs ---


def _probe_handlers(runs: Counter[str]) -> dict[str, JobHandler]:
    def probe(job: Job, progress: Progress) -> dict[str, Any]:
        runs[job.id] += 1
        progress(IngestProgress(phase="parsing", files_done=1, files_total=2, failed=1))
        progress(IngestProgress(phase="writing", files_done=2, files_total=2, chunks_written=7, failed=1))
        return {"chunks_written": 7, "failed": [{"source": "bad.md", "reason": "binary"}]}

    def refuse(job: Job, progress: Progress) -> dict[str, Any]:
        raise InvalidRequest("not a folder")

    return {"probe": probe, "refuse": refuse}


def test_the_queue_runs_each_job_once_and_reports_progress_and_status(backend: Backend):
    runs: Counter[str] = Counter()
    queue = backend.queue(_probe_handlers(runs))
    queue.start()
    try:
        jobs = [queue.submit("probe", "kb") for _ in range(3)]
        refused = queue.submit("refuse", "kb")
        finished = [queue.wait(j.id, timeout=60) for j in jobs]
        failed = queue.wait(refused.id, timeout=60)
    finally:
        queue.stop()
    for job in finished:
        assert (job.status, job.attempts) == ("done", 1)
        assert job.progress == IngestProgress(
            phase="done", files_done=2, files_total=2, chunks_written=7, failed=1
        )
    assert runs == Counter({j.id: 1 for j in jobs})
    assert failed.status == "failed" and failed.error == JobError(
        code="invalid_request", message="not a folder"
    )


def test_the_queue_reruns_a_job_whose_worker_died_once_its_lease_lapses(backend: Backend):
    runs: Counter[str] = Counter()
    queue = backend.queue(_probe_handlers(runs), lease_seconds=0.6)
    dead = backend.store()
    job = dead.save(Job(kind="probe", collection="kb"))
    # A worker that claimed the job and was SIGKILLed: its Huey message is gone, its heartbeat stopped.
    assert dead.claim(job.id, "dead-worker", 0.6) is not None
    dead.close()
    queue.start()
    try:
        finished = _wait_for(lambda: (j := queue.store.get(job.id)).finished and j, 60, "the rerun")
    finally:
        queue.stop()
    assert (finished.status, finished.attempts, finished.worker) == ("done", 2, queue.worker)
    assert runs[job.id] == 1


def test_a_job_whose_worker_keeps_dying_is_abandoned_with_a_reason(backend: Backend):
    runs: Counter[str] = Counter()
    store = backend.store()
    job = store.save(Job(kind="probe", collection="kb", status=JobStatus.running, attempts=5))
    store.close()
    queue = backend.queue(_probe_handlers(runs))
    queue.start()
    try:
        finished = queue.wait(job.id, timeout=60)
    finally:
        queue.stop()
    assert finished.status == "failed" and finished.error.message.startswith("abandoned")
    assert runs[job.id] == 0


def test_the_server_keeps_jobs_in_redis_when_given_a_url(
    settings: Settings, redis_server: str, tmp_path: Path
):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nAlpha text.\n")
    name = f"test-{uuid.uuid4().hex[:8]}"
    from tests.conftest import app_client

    with app_client(settings.model_copy(update={"redis_url": redis_server, "job_queue": name})) as client:
        job = client.post("/collections/kb/ingest", json={"path": str(folder), "wait": True}).json()
        progress = job["progress"]
        assert job["status"] == "done" and progress["files_done"] == progress["chunks_written"] == 1
        assert [j["id"] for j in client.get("/jobs").json()] == [job["id"]]
    shared = RedisJobStore(redis_server, name)  # what any other worker or server on this queue sees
    assert shared.get(job["id"]).status == "done"
    shared.close()
    assert not (settings.data_dir / "jobs.sqlite").exists()


def test_ragsvc_worker_refuses_to_start_without_a_shared_queue_and_store():
    result = run_cli("worker", env={"RAGSVC_REDIS_URL": "", "RAGSVC_QDRANT_URL": ""})
    assert result.returncode == 2
    assert "RAGSVC_REDIS_URL" in result.stderr and "RAGSVC_QDRANT_URL" in result.stderr


# --- two worker processes on Redis ---


@pytest.mark.slow
def test_two_redis_workers_share_a_queue_and_finish_a_killed_workers_job(redis_server: str, tmp_path: Path):
    name = f"test-{uuid.uuid4().hex[:8]}"
    lease = 2.0
    env = {
        **os.environ,
        "RAGSVC_REDIS_URL": redis_server,
        "RAGSVC_JOB_QUEUE": name,
        "RAGSVC_JOB_LEASE_SECONDS": str(lease),
    }
    workers = []
    for i in range(2):
        log = open(tmp_path / f"worker{i}.log", "wb")  # noqa: SIM115
        worker_env = {**env, "RAGSVC_DATA_DIR": str(tmp_path / f"worker{i}")}
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.job_worker"],
                cwd=REPO,
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    import redis

    events = redis.Redis.from_url(redis_server)
    submitter = open_job_queue(tmp_path, {}, redis_url=redis_server, name=name)  # submits, never consumes
    try:
        jobs = [submitter.submit("probe", "kb", steps=4, step_seconds=0.25) for _ in range(12)]

        def log_rows() -> list[dict[str, Any]]:
            return [json.loads(r) for r in events.lrange(events_key(name), 0, -1)]

        def victim_mid_job() -> dict[str, Any] | None:
            # A worker that has finished a job and is now inside another one.
            rows = log_rows()
            by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                by_pid[row["pid"]].append(row)
            for pid_rows in by_pid.values():
                ended = [r for r in pid_rows if r["event"] == "end"]
                if ended and pid_rows[-1]["event"] == "start":
                    return pid_rows[-1]
            return None

        victim = _wait_for(victim_mid_job, 120, "a worker to be mid-job after finishing one")
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.time()
        survivor = next(w for w in workers if w.pid != victim["pid"])
        _wait_for(lambda: all(submitter.store.get(j.id).finished for j in jobs), 180, "every job to finish")
        assert survivor.poll() is None

        rows = log_rows()
        finals = {j.id: submitter.store.get(j.id) for j in jobs}
        assert all(job.status == "done" for job in finals.values())
        # Every job completed exactly once; the killed one was started twice, the second time after the kill.
        assert Counter(r["job"] for r in rows if r["event"] == "end") == Counter({j.id: 1 for j in jobs})
        starts = Counter(r["job"] for r in rows if r["event"] == "start")
        assert starts == Counter({j.id: 1 for j in jobs}) + Counter({victim["job"]: 1})
        assert [r["pid"] for r in rows if r["job"] == victim["job"] and r["event"] == "end"] == [survivor.pid]
        assert finals[victim["job"]].attempts == 2
        second_start = [r for r in rows if r["job"] == victim["job"] and r["event"] == "start"][1]
        assert second_start["pid"] == survivor.pid and second_start["t"] > killed_at
        # Both workers took jobs from the one queue, and no job ran on two workers at once.
        assert {r["pid"] for r in rows if r["event"] == "end"} == {w.pid for w in workers}
        for job in jobs:
            runs = [r for r in rows if r["job"] == job.id]
            for earlier, later in itertools.pairwise(runs):
                if later["event"] == "start":
                    assert earlier["event"] == "end" or earlier["t"] < killed_at < later["t"]
        assert all(job.attempts == 1 for job_id, job in finals.items() if job_id != victim["job"])
    finally:
        submitter.store.close()
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
            worker.wait(timeout=60)


# --- `ragsvc serve` killed at chosen points of a re-ingest ---


# Pages of four chunks are embedded and written 32 at a time (the default batch would take them all at once).
SMALL_BATCHES = {"RAGSVC_INGEST_BATCH_CHUNKS": "128"}


def _start_server(data_dir: Path, port: int, **env: str) -> subprocess.Popen:
    log = open(data_dir.parent / f"serve-{port}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [RAGSVC, "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )


def _until_up(url: str, process: subprocess.Popen) -> None:
    for _ in range(900):
        assert process.poll() is None, f"server exited with {process.returncode}"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not start")


def _write_pages(folder: Path, revision: str, count: int) -> None:
    for i in range(count):
        sections = "\n\n".join(  # four chunks per page
            f"## Part {j}\n\nRevision {revision}: page {i} part {j} explains topic {i * 7 + j} in detail. "
            * 3
            for j in range(4)
        )
        (folder / f"page{i:03}.md").write_text(f"# Page {i}\n\n{sections}\n")


class VersionWatcher:
    """Searches every page's chunks again and again while the server lives, and records any result that
    shows one page in two revisions at once (a half-replaced document)."""

    def __init__(self, url: str, pages: int) -> None:
        self.url, self.pages = url, pages
        self.focus: str | None = None  # a page known to be half-written in the store: asked every other time
        self.answered = 0
        self.answered_on_focus = 0
        self.mixed: list[tuple[str, set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> VersionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _watch(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for n in itertools.cycle(range(self.pages)):
                if self._stop.is_set():
                    return
                source = self.focus if self.focus and n % 2 else f"page{n:03}.md"
                body = {"question": f"{source} topic", "top_k": 20, "source_prefix": source}
                try:
                    response = client.post("/collections/kb/search", json=body)
                except httpx.HTTPError:  # the server is down or restarting
                    time.sleep(0.05)
                    continue
                if response.status_code != 200:
                    continue
                self.answered += 1
                self.answered_on_focus += source == self.focus
                texts = [r["text"] for r in response.json()["results"]]
                revisions = {rev for rev in ("one", "two") for text in texts if f"Revision {rev}:" in text}
                if len(revisions) > 1:
                    self.mixed.append((source, revisions))


def test_a_job_left_running_by_a_dead_server_is_finished_at_the_next_start(
    settings: Settings, data_dir: Path, tmp_path: Path
):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nAlpha text.\n")
    data_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteJobStore(data_dir / "jobs.sqlite")
    job = store.save(Job(kind="ingest_folder", collection="kb", params={"path": str(folder)}))
    # Claimed by a server that died: its lease would still run for a minute, but the data dir's next owner
    # knows that server is gone (it held the data dir's lock).
    assert store.claim(job.id, "dead-server", 60) is not None
    store.close()
    from tests.conftest import app_client

    with app_client(settings) as client:
        finished = wait_for_job(client, job.id)
        assert finished["status"] == "done" and finished["attempts"] == 2
        assert client.get("/collections/kb").json()["chunks"] == 1


COUNTS = ("files_done", "chunks_written", "added", "updated", "unchanged", "removed", "skipped", "failed")


def _grows(snapshots: list[IngestProgress]) -> bool:
    return all(getattr(a, c) <= getattr(b, c) for a, b in itertools.pairwise(snapshots) for c in COUNTS)


def test_a_running_ingest_job_shows_chunks_and_failures_grow_then_its_summary(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every progress record the job stores is kept by a spy around the real store (what GET /jobs/{id}
    serves at that moment), so what a poller could see is checked whatever the machine's speed."""
    folder = tmp_path / "docs"
    folder.mkdir()
    _write_pages(folder, "one", 40)
    (folder / "page019-junk.md").write_bytes(b"\x00\x01\x02binary\x00" * 100)  # fails in the first batch
    store = client.app.state.runtime.jobs.store
    stored: list[IngestProgress] = []
    update = store.update

    def recorded_update(job: Job, worker: str) -> bool:
        stored.append(job.progress)
        return update(job, worker)

    monkeypatch.setattr(store, "update", recorded_update)
    job = client.post("/collections/kb/ingest", json={"path": str(folder)}).json()
    polled = [IngestProgress.model_validate(job["progress"])]
    while (job := client.get(f"/jobs/{job['id']}").json())["status"] not in ("done", "failed"):
        polled.append(IngestProgress.model_validate(job["progress"]))
        time.sleep(0.02)

    assert job["status"] == "done", job
    running, last = stored[:-1], stored[-1]
    assert _grows(stored) and _grows(polled)
    assert all(p.files_total == 41 for p in running)
    assert any(p.failed == 0 for p in running) and any(p.failed == 1 for p in running)
    assert any(p.files_done < 41 and p.chunks_written > 0 and p.failed == 1 for p in running)
    assert {"parsing", "embedding", "writing", "building index"} <= {p.phase for p in running}
    # The job's stored progress at the end is its summary's counts.
    summary = job["summary"]
    final = IngestProgress.model_validate(job["progress"])
    assert final == last
    assert final.phase == "done" and final.files_done == final.files_total == summary["files"] == 41
    assert final.chunks_written == summary["chunks_written"] == summary["chunks_total"] > 0
    assert (final.added, final.updated, final.unchanged, final.removed) == (40, 0, 0, 0)
    assert final.failed == len(summary["failed"]) == 1 and summary["failed"][0]["source"] == "page019-junk.md"
    assert final.skipped == len(summary["skipped"]) == 0


@pytest.mark.slow
def test_sigkill_at_a_moment_seen_from_outside_then_restart_finishes_the_job_with_every_file_once(
    data_dir: Path, tmp_path: Path
):
    """No crash point: killed when the job's own progress says a third of the files are done."""
    folder = tmp_path / "many"
    folder.mkdir()
    _write_pages(folder, "one", 120)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start_server(data_dir, port, **SMALL_BATCHES)
    _until_up(url, server)
    job = httpx.post(f"{url}/collections/kb/ingest", json={"path": str(folder)}).json()
    while (state := httpx.get(f"{url}/jobs/{job['id']}").json())["progress"]["files_done"] < 32:
        assert state["status"] in ("queued", "running"), state
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()

    server = _start_server(data_dir, port, **SMALL_BATCHES)
    try:
        _until_up(url, server)
        with httpx.Client(base_url=url, timeout=60) as client:
            done = wait_for_job(client, job["id"])
            assert done["status"] == "done" and done["attempts"] == 2
            assert done["progress"]["files_done"] == done["progress"]["files_total"] == 120
            documents = client.get("/collections/kb/documents").json()
            chunks = client.get("/collections/kb").json()["chunks"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert [d["source"] for d in documents] == [f"page{i:03}.md" for i in range(120)]
    # Pages of one shape have one chunk count; a page written twice or half-dropped would stand out.
    assert len({d["chunks"] for d in documents}) == 1 and chunks == 120 * documents[0]["chunks"]


def _stored(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The payloads of collection kb's chunks by source, read from the store while no server runs."""
    runtime = open_runtime(Settings(data_dir=data_dir))
    try:
        record = runtime.registry.get("kb")
        chunks = [hit.payload for hit in runtime.engine.scroll(record.live_index, batch=1024)]
    finally:
        runtime.close()
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for payload in chunks:
        by_source[payload["source"]].append(payload)
    return by_source


# The crash point comes from the test-only setting (RAGSVC_TEST_CRASH_AT), which the runtime arms as it opens.
_CRASHING_INGEST = """
import sys
from pathlib import Path

from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings
from ragsvc.service import ingestion
from ragsvc.service.access import LOCAL

ingestion.ingest_folder(open_runtime(Settings()), LOCAL, "kb", Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_document_killed_between_its_new_and_old_chunks_is_searched_in_one_version(
    settings: Settings, data_dir: Path, tmp_path: Path
):
    folder = tmp_path / "docs"
    folder.mkdir()
    _write_pages(folder, "one", 3)
    settings = settings.model_copy(update={"chunks_per_source": 0})
    runtime = open_runtime(settings)
    ingestion.ingest_folder(runtime, LOCAL, "kb", folder)
    runtime.close()

    _write_pages(folder, "two", 3)
    killed = subprocess.run(
        [sys.executable, "-c", _CRASHING_INGEST, str(folder)],
        cwd=REPO,
        capture_output=True,
        env=os.environ | {"RAGSVC_TEST_CRASH_AT": "replace:2"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    stored = _stored(data_dir)
    assert {p["doc_hash"] for p in stored["page000.md"]} != {p["doc_hash"] for p in stored["page001.md"]}
    assert len({p["doc_hash"] for p in stored["page001.md"]}) == 2  # both versions are in the store

    runtime = open_runtime(settings)
    try:
        for source in ("page000.md", "page001.md", "page002.md"):
            hits = retrieval.search(runtime, LOCAL, "kb", f"{source} topic", top_k=20, source_prefix=source)
            expected = "one" if source == "page002.md" else "two"  # page002 was not reached before the kill
            assert hits and all(f"Revision {expected}:" in hit.text for hit in hits), source
        summary = ingestion.ingest_folder(runtime, LOCAL, "kb", folder)
    finally:
        runtime.close()
    assert summary.updated == ["page001.md", "page002.md"] and summary.unchanged == ["page000.md"]
    assert all(len({p["doc_hash"] for p in chunks}) == 1 for chunks in _stored(data_dir).values())


@pytest.mark.slow
def test_sigkill_while_parsing_embedding_and_replacing_then_restart_leaves_one_version_per_file(
    data_dir: Path, tmp_path: Path
):
    pages = 70  # three batches of files in the pipeline
    folder = tmp_path / "docs"
    folder.mkdir()
    _write_pages(folder, "one", pages)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Every chunk of a page in search results, so that a search can show them side by side.
    every_chunk = {"RAGSVC_CHUNKS_PER_SOURCE": "0", **SMALL_BATCHES}

    server = _start_server(data_dir, port, **every_chunk)
    _until_up(url, server)
    first = httpx.post(f"{url}/collections/kb/ingest", json={"path": str(folder), "wait": True}, timeout=600)
    assert first.json()["status"] == "done", first.text
    server.terminate()
    server.wait(timeout=60)

    _write_pages(folder, "two", pages)  # every file changes: the job replaces each document
    with VersionWatcher(url, pages) as watcher:
        job_id = None
        # parse:40 is inside the second batch, parsed on its thread while the first batch is embedded or
        # written; embed:2 is the second batch's embedding on the rerun; replace:3 is the third document
        # replaced on the rerun after that, killed with its new chunks written and its old ones still there.
        for crash_at, half_written in (("parse:40", {0, 1}), ("embed:2", {0}), ("replace:3", {1})):
            server = _start_server(data_dir, port, RAGSVC_TEST_CRASH_AT=crash_at, **every_chunk)
            if job_id is None:
                _until_up(url, server)
                job_id = httpx.post(f"{url}/collections/kb/ingest", json={"path": str(folder)}).json()["id"]
            # Later starts resume the job by themselves, and may die before they answer at all.
            assert server.wait(timeout=600) == -signal.SIGKILL, f"the server was not killed at {crash_at}"
            versions = {
                source: {p["doc_hash"] for p in chunks} for source, chunks in _stored(data_dir).items()
            }
            mixed = sorted(source for source, hashes in versions.items() if len(hashes) > 1)
            # Killed while embedding, no document is half-written; killed between writing a document's new
            # chunks and dropping its old ones, that one document holds both, and so may the document being
            # written when the parsing thread is killed.
            assert len(mixed) in half_written, (crash_at, mixed)
            watcher.focus = mixed[0] if mixed else None

        server = _start_server(data_dir, port, **every_chunk)
        try:
            _until_up(url, server)
            with httpx.Client(base_url=url, timeout=60) as client:
                job = wait_for_job(client, job_id)
                answered_before_end = watcher.answered
                _wait_for(
                    lambda: watcher.answered > answered_before_end + pages, 300, "searches after the job"
                )
        finally:
            server.terminate()
            server.wait(timeout=60)

    assert job["status"] == "done" and job["attempts"] == 4, job
    assert job["progress"]["files_done"] == job["progress"]["files_total"] == pages
    print(f"{watcher.answered} searches, {watcher.answered_on_focus} on the half-written {watcher.focus}")
    assert watcher.mixed == [], f"{len(watcher.mixed)} searches saw a half-replaced page: {watcher.mixed[:5]}"

    # What is stored: every page once, in its new revision only, each position once: no duplicate or orphan.
    by_source = _stored(data_dir)
    assert sorted(by_source) == [f"page{i:03}.md" for i in range(pages)]
    for source, payloads in by_source.items():
        assert len({p["doc_hash"] for p in payloads}) == 1, source
        assert all("Revision two:" in p["text"] and "Revision one:" not in p["text"] for p in payloads), (
            source
        )
        assert sorted(p["position"] for p in payloads) == list(range(len(payloads))), source


@pytest.mark.slow
def test_a_stalled_redis_answers_503_then_serves_again(settings: Settings, tmp_path: Path):
    """redis-server paused with SIGSTOP (a stall the real part produces on demand): a request that needs the
    job store answers 503 job_store_unavailable after the store's timeout, not a 500 or a hang."""
    port = free_port()
    redis_process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout != b"PONG\n":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        with app_client(settings.model_copy(update={"redis_url": url})) as client:
            assert client.get("/jobs").status_code == 200
            redis_process.send_signal(signal.SIGSTOP)
            try:
                stalled = client.get("/jobs")
            finally:
                redis_process.send_signal(signal.SIGCONT)
            assert stalled.status_code == 503, stalled.text
            assert stalled.json()["error"]["code"] == "job_store_unavailable"
            assert client.get("/jobs").status_code == 200
    finally:
        redis_process.terminate()
        redis_process.wait(timeout=30)


@pytest.mark.slow
def test_forgetting_a_deleted_document_never_undoes_a_workers_update(redis_server: str):
    """The crash soak's stuck job: a delete's forget rewrote a job record from a copy read before the worker
    finished it, so the job was 'running' again outside the open set, forever."""
    store = RedisJobStore(redis_server, f"forget-{uuid.uuid4().hex[:6]}")
    for _ in range(30):
        job = store.save(Job(kind="ingest_uploads", collection="kb", params={"documents": ["a.md", "b.md"]}))
        claimed = store.claim(job.id, "w", 30)
        assert claimed is not None
        stop = threading.Event()

        def forget(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                store.forget("kb", "a.md")

        forgetting = threading.Thread(target=forget)
        forgetting.start()
        for step in range(10):
            claimed.progress = IngestProgress(files_done=step, files_total=10)
            assert store.update(claimed, "w")
        claimed.status = JobStatus.done
        assert store.update(claimed, "w")
        stop.set()
        forgetting.join()
        assert store.get(job.id).status == JobStatus.done
    assert store.orphans() == []
    store.close()
