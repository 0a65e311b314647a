"""A job worker process for tests/test_jobs.py: ragsvc's JobQueue on Redis, run like `ragsvc worker`, but with
a handler that records each execution in Redis instead of ingesting.

Why not the ingest handlers: a second worker process needs a vector store that two processes can write, and
here there is none (Qdrant Edge and qdrant-client's local mode are both one-process; no Qdrant server is
installed). What is under test, claim, lease, heartbeat and reaper, does not depend on what the handler does.

Run: python -m tests.job_worker, with RAGSVC_REDIS_URL, RAGSVC_JOB_QUEUE and RAGSVC_JOB_LEASE_SECONDS set.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis

from ingest.progress import IngestProgress, Progress
from ragsvc.jobs.queue import open_job_queue
from ragsvc.jobs.records import Job
from ragsvc.settings import Settings


def events_key(queue: str) -> str:
    return f"test:{queue}:events"


def probe_handler(settings: Settings, worker: list[str]) -> Any:
    client = redis.Redis.from_url(settings.redis_url or "")
    key = events_key(settings.job_queue)

    def record(job: Job, event: str) -> None:
        row = {"job": job.id, "worker": worker[0], "pid": os.getpid(), "event": event, "t": time.time()}
        client.rpush(key, json.dumps(row))

    def probe(job: Job, progress: Progress) -> dict[str, Any]:
        record(job, "start")
        steps = int(job.params.get("steps", 5))
        for step in range(steps):
            time.sleep(float(job.params.get("step_seconds", 0.2)))
            progress(IngestProgress(files_done=step + 1, files_total=steps))
        record(job, "end")
        return {"steps": steps}

    return probe


def main() -> None:
    settings = Settings()
    worker: list[str] = []
    queue = open_job_queue(
        Path(settings.data_dir),
        {"probe": probe_handler(settings, worker)},
        redis_url=settings.redis_url,
        name=settings.job_queue,
        lease_seconds=settings.job_lease_seconds,
    )
    worker.append(queue.worker)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    queue.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        queue.stop()


if __name__ == "__main__":
    main()
