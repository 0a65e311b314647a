"""Crash soak: SIGKILL `ragsvc serve` at random points while it ingests, edits, deletes, reindexes and answers,
restart it, and check every acknowledged write against a model of what must be there.

Two collections: `up` takes uploads and deletes through the REST API; `folder` ingests a folder this script
edits (adds, rewrites and removes files, and deletes some through the API). Each document has 1-4 sections,
one chunk each, and every chunk names its document, version and part, so the model knows the exact chunks.

During a round, searches are checked as they come: no answer holds two versions of one document (half
replaced), and none holds a document whose delete was acknowledged before the search was sent. After each
restart the script lets the jobs finish, ingests the folder once more and compares: every acknowledged upload
present in its version with exactly its chunks (no lost, duplicated or orphaned chunk), every deleted
document gone (no listing, no search hit, no stored file), nothing listed that the model does not hold,
no partial upload file left, no job unfinished after --settle seconds (stuck).

    python -m bench.soak --kills 500 --seed 1
    python -m bench.soak --kills 200 --seed 2 --redis   # jobs in a redis-server (AOF) it starts and kills too

Prints its counts; exits 1 on any violation (each is printed as it is found).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

RAGSVC = str(Path(sys.executable).with_name("ragsvc"))
# The default model and the one a reindex switches to and back from (MiniLM on ONNX, int8 and float).
MODELS = ("sentence-transformers/all-MiniLM-L6-v2#onnx-int8", "sentence-transformers/all-MiniLM-L6-v2#onnx")
MARK = re.compile(r"zq(?P<doc>[a-z0-9]+) version v(?P<version>\d+) part (?P<part>\d+)")
WORDS = (
    "cluster storage quota module python slurm array node memory scratch backup project group share "
    "license compiler library container image network login account password policy queue partition"
).split()
ABSENT = 0  # the version of a document that is not there

Version = int  # 1, 2, ... for a document's versions; ABSENT for none


def sections(doc: str, version: Version) -> int:
    """How many sections (and so chunks) a document version has: 1 to 4, fixed by its name and version."""
    return 1 + (sum(map(ord, doc)) * 7 + version * 13) % 4


def document(doc: str, version: Version) -> str:
    rng = random.Random(f"{doc}/{version}")
    parts = [f"# Document {doc}", ""]
    for part in range(sections(doc, version)):
        filler = " ".join(rng.choice(WORDS) for _ in range(40))
        parts += [f"## Part {part} of {doc}", "", f"zq{doc} version v{version} part {part}. {filler}.", ""]
    return "\n".join(parts)


@dataclass
class Doc:
    """What the model knows of one document: the versions it may be in (one when certain), and since when a
    delete of it is acknowledged (None unless it is certainly gone)."""

    versions: set[Version] = field(default_factory=lambda: {ABSENT})
    gone_since: float | None = None

    def certain(self) -> Version | None:
        return next(iter(self.versions)) if len(self.versions) == 1 else None


class Counts(Counter[str]):
    pass


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix=f"soak-{args.seed}-"))
        self.data = self.work / "data"
        self.corpus = self.work / "corpus"
        self.corpus.mkdir(parents=True, exist_ok=True)
        self.counts = Counts()
        self.violations: list[str] = []
        self.lock = threading.Lock()  # the model, between the driver and the searcher
        self.up: dict[str, Doc] = {f"u{i:02d}": Doc() for i in range(args.docs)}
        self.folder: dict[str, Doc] = {f"f{i:02d}": Doc() for i in range(args.docs)}
        self.next_version = 1
        self.failed_jobs: set[str] = set()
        self.folder_changed = False  # since the last ingest that settled
        self.query_rng = random.Random(args.seed + 1_000_003)
        self.models = {"up": 0, "folder": 0}  # index into MODELS; uncertain after an unacknowledged reindex
        self.server: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = free_port()
        self.url = ""
        self.log = open(self.work / "server.log", "ab")  # noqa: SIM115

    # --- processes -------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "RAGSVC_DATA_DIR": str(self.data),
            "RAGSVC_INGEST_ROOTS": str(self.corpus),
            "RAGSVC_CHUNKS_PER_SOURCE": "0",
            "RAGSVC_JOB_LEASE_SECONDS": "2",
            "RAGSVC_LLM_BASE_URL": "http://127.0.0.1:9",  # no LLM: nothing here asks one
            "RAGSVC_LOG_LEVEL": "WARNING",
        }
        if self.args.redis:
            env["RAGSVC_REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            env["RAGSVC_JOB_QUEUE"] = f"soak{self.args.seed}"
        return env

    def start_redis(self) -> None:
        folder = self.work / "redis"
        folder.mkdir(exist_ok=True)
        command = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)]
        self.redis = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log.write(f"\n--- start on port {port}\n".encode())
        self.log.flush()
        started = time.monotonic()
        self.server = subprocess.Popen(
            [RAGSVC, "serve", "--port", str(port)], stdout=self.log, stderr=subprocess.STDOUT, env=self.env()
        )
        while True:
            if self.server.poll() is not None:
                raise SystemExit(
                    f"ragsvc serve exited with {self.server.returncode}; see {self.work}/server.log"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > 180:
                raise SystemExit("ragsvc serve did not answer within 180 s")
            time.sleep(0.05)
        self.counts["start seconds x100"] += round((time.monotonic() - started) * 100)

    def kill(self) -> None:
        """SIGKILL the server (with --redis, sometimes redis-server too); what it started lives on, as after
        a real crash, and must not get in the way of the next start."""
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        self.counts["kills"] += 1
        if self.redis is not None and self.rng.random() < 0.2:
            self.redis.send_signal(signal.SIGKILL)
            self.redis.wait()
            self.counts["redis kills"] += 1
            self.start_redis()

    def stop(self) -> None:
        for process in (self.server, self.redis):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()

    # --- checks -----------------------------------------------------------------------------------------

    def violation(self, message: str, kind: str) -> None:
        self.counts[kind] += 1
        self.violations.append(message)
        print(f"VIOLATION ({kind}): {message}", flush=True)

    def check_hits(self, collection: str, hits: list[dict], sent: float) -> None:
        """One search answer: one version per document, and no document deleted before it was sent."""
        seen: dict[str, set[str]] = {}
        for hit in hits:
            mark = MARK.search(hit["text"])
            if mark is None:
                self.violation(f"{collection}: a hit with no mark: {hit['text'][:80]!r}", "orphaned")
                continue
            seen.setdefault(hit["source"], set()).add(mark["version"])
        docs = self.up if collection == "up" else self.folder
        with self.lock:
            for source, versions in seen.items():
                if len(versions) > 1:
                    self.violation(
                        f"{collection}/{source}: one answer holds versions {versions}", "half-replaced"
                    )
                doc = docs.get(source.removesuffix(".md"))
                if doc is not None and doc.gone_since is not None and doc.gone_since < sent:
                    self.violation(
                        f"{collection}/{source}: found after its delete was acknowledged", "deleted-found"
                    )

    def search(self, client: httpx.Client, collection: str, question: str) -> list[dict]:
        sent = time.monotonic()
        body = {"question": question, "top_k": 100, "mode": "sparse"}
        response = client.post(f"{self.url}/collections/{collection}/search", json=body, timeout=30)
        if response.status_code == 404:
            return []  # the collection does not exist yet
        if response.status_code != 200:
            self.violation(f"search answered {response.status_code}: {response.text}", "errors")
            return []
        hits = response.json()["results"]
        self.counts["searches"] += 1
        self.check_hits(collection, hits, sent)
        return hits

    # --- what a round does ------------------------------------------------------------------------------

    def upload(self, client: httpx.Client) -> None:
        doc = self.rng.choice(sorted(self.up))
        version, self.next_version = self.next_version, self.next_version + 1
        with self.lock:
            state = self.up[doc]
            state.versions.add(version)  # from the moment it is sent, it may be there
            state.gone_since = None
        files = {"files": (f"{doc}.md", document(doc, version).encode(), "text/markdown")}
        response = client.post(f"{self.url}/collections/up/documents", files=files, timeout=30)
        if response.status_code != 202:
            self.violation(f"upload of {doc} answered {response.status_code}: {response.text}", "errors")
            return
        with self.lock:
            state.versions = {version}
        self.counts["uploads acknowledged"] += 1

    def delete(self, client: httpx.Client, collection: str, doc: str) -> None:
        docs = self.up if collection == "up" else self.folder
        state = docs[doc]
        with self.lock:
            was = set(state.versions)
            state.versions.add(ABSENT)  # from the moment it is sent, it may be gone
        response = client.delete(f"{self.url}/collections/{collection}/documents/{doc}.md", timeout=30)
        if response.status_code not in (200, 404):
            self.violation(f"delete of {doc} answered {response.status_code}: {response.text}", "errors")
            return
        matched = response.status_code == 200
        if matched and was == {ABSENT}:
            self.violation(
                f"{collection}/{doc}: a delete matched a document that was gone", "wrong-delete-report"
            )
        if not matched and ABSENT not in was and collection == "up":
            # An acknowledged upload is stored at once: a delete must find it, indexed or not yet.
            self.violation(
                f"{collection}/{doc}: a delete matched nothing; present in {was}", "wrong-delete-report"
            )
        code = response.json().get("error", {}).get("code") if not matched else None
        if code not in (None, "document_not_found", "collection_not_found"):
            self.violation(
                f"{collection}/{doc}: a 404 without document_not_found: {response.text}",
                "wrong-delete-report",
            )
        with self.lock:
            state.versions = {ABSENT}
            state.gone_since = time.monotonic()
        self.counts[f"deletes {'matched' if matched else 'unmatched'}"] += 1

    def edit_folder(self) -> None:
        """Write a new version of a folder document, or remove one (the file, then through the API)."""
        doc = self.rng.choice(sorted(self.folder))
        path = self.corpus / f"{doc}.md"
        if path.exists() and self.rng.random() < 0.3:
            path.unlink()
            self.folder_changed = True
            self.counts["folder removals"] += 1
            return
        version, self.next_version = self.next_version, self.next_version + 1
        partial = path.with_name(f".{doc}.tmp")
        partial.write_text(document(doc, version))
        partial.replace(path)
        self.folder_changed = True
        with self.lock:
            self.folder[doc].versions.add(version)
            self.folder[doc].gone_since = None
        self.counts["folder edits"] += 1

    def ingest_folder(self, client: httpx.Client, wait: bool = False) -> None:
        body = {"path": str(self.corpus), "wait": wait}
        response = client.post(f"{self.url}/collections/folder/ingest", json=body, timeout=900)
        if response.status_code not in (200, 202):
            self.violation(f"folder ingest answered {response.status_code}: {response.text}", "errors")
            return
        self.counts["folder ingests"] += 1

    def reindex(self, client: httpx.Client) -> None:
        collection = self.rng.choice(["up", "folder"])
        info = client.get(f"{self.url}/collections/{collection}", timeout=30)
        if info.status_code == 404:
            return
        current = info.json()["embedding"]["model"]
        target = MODELS[1] if current == MODELS[0] else MODELS[0]
        body = {"embedding": {"model": target}}
        response = client.post(f"{self.url}/collections/{collection}/reindex", json=body, timeout=30)
        if response.status_code == 409 and response.json()["error"]["code"] == "already_embedded":
            # A reindex queued earlier switched the collection between the read above and this request.
            self.counts["reindexes refused as already done"] += 1
            return
        if response.status_code not in (200, 202):
            self.violation(f"reindex answered {response.status_code}: {response.text}", "errors")
            return
        self.counts["reindexes"] += 1

    def drive(self, stop: threading.Event) -> None:
        """Writes until the kill: uploads, deletes, folder edits and ingests, now and then a reindex."""
        with httpx.Client() as client:
            while not stop.is_set():
                roll = self.rng.random()
                try:
                    if roll < 0.40:
                        self.upload(client)
                    elif roll < 0.60:
                        self.delete(client, "up", self.rng.choice(sorted(self.up)))
                    elif roll < 0.80:
                        self.edit_folder()
                    elif roll < 0.88:
                        doc = self.rng.choice(sorted(self.folder))
                        (self.corpus / f"{doc}.md").unlink(missing_ok=True)
                        self.folder_changed = True
                        self.delete(client, "folder", doc)
                    elif roll < 0.97:
                        self.ingest_folder(client)
                    elif roll < 0.97 + self.args.reindex:
                        self.reindex(client)
                except httpx.HTTPError:
                    return  # killed under it: the model keeps every state the request may have left
                time.sleep(self.rng.random() * 0.2)

    def query(self, stop: threading.Event) -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                collection = self.query_rng.choice(["up", "folder"])
                doc = self.query_rng.choice(sorted(self.up if collection == "up" else self.folder))
                try:
                    self.search(client, collection, f"zq{doc}")
                except httpx.HTTPError:
                    return
                time.sleep(0.02)

    def round(self) -> None:
        stop = threading.Event()
        threads = [
            threading.Thread(target=self.drive, args=(stop,)),
            threading.Thread(target=self.query, args=(stop,)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(self.rng.uniform(0.05, self.args.max_round))
        self.kill()
        stop.set()
        for thread in threads:
            thread.join()

    # --- after a restart ----------------------------------------------------------------------------------

    def settle(self, client: httpx.Client) -> None:
        """Let every job finish (a job still unfinished after --settle seconds is stuck), then ingest the
        folder once more so that it matches the files."""
        if self.folder_changed:
            self.ingest_folder(client, wait=True)
            self.folder_changed = False
        deadline = time.monotonic() + self.args.settle
        while True:
            jobs = client.get(f"{self.url}/jobs", timeout=30).json()
            unfinished = [j for j in jobs if j["status"] in ("queued", "running")]
            if not unfinished:
                break
            if time.monotonic() > deadline:
                for j in unfinished:
                    self.violation(
                        f"job {j['id']} ({j['kind']}) still {j['status']} after {self.args.settle} s", "stuck"
                    )
                break
            time.sleep(0.5)
        for job in jobs:
            if job["status"] == "failed" and job["id"] not in self.failed_jobs:
                self.failed_jobs.add(job["id"])
                self.counts["jobs failed"] += 1
                print(f"job {job['id']} ({job['kind']}) failed: {job.get('error')}", flush=True)

    def check_collection(self, client: httpx.Client, collection: str) -> None:
        docs = self.up if collection == "up" else self.folder
        if collection == "folder":
            with self.lock:  # the folder's truth is its files, which the last ingest read
                for doc, state in docs.items():
                    path = self.corpus / f"{doc}.md"
                    state.versions = (
                        {int(MARK.search(path.read_text())["version"])} if path.exists() else {ABSENT}
                    )
        response = client.get(f"{self.url}/collections/{collection}/documents", timeout=30)
        listed = {d["source"]: d for d in response.json()} if response.status_code == 200 else {}
        for source in sorted(set(listed) - {f"{d}.md" for d in docs}):
            self.violation(f"{collection}/{source}: listed but never written", "orphaned")
        # One search finds every chunk of every document (at most 4 each, and --docs is at most 25)
        everything = self.search(client, collection, " zq".join(["", *docs]).strip())
        for doc, state in sorted(docs.items()):
            source = f"{doc}.md"
            hits = [h for h in everything if h["source"] == source]
            versions = {int(m["version"]) for h in hits if (m := MARK.search(h["text"]))}
            parts = Counter(
                (int(m["version"]), int(m["part"])) for h in hits if (m := MARK.search(h["text"]))
            )
            found: Version = ABSENT if source not in listed else (max(versions) if versions else -1)
            if found not in state.versions:
                kind = "lost" if found == ABSENT or found < max(state.versions) else "resurrected"
                self.violation(
                    f"{collection}/{source}: found {found or 'nothing'}, expected one of {state.versions}",
                    kind,
                )
                continue
            with self.lock:
                state.versions = {found}
            stored = self.data / "uploads" / collection / source
            if collection == "up" and (found == ABSENT) == stored.exists():
                self.violation(
                    f"{collection}/{source}: stored upload {'left' if stored.exists() else 'missing'}", "lost"
                )
            if found == ABSENT:
                if hits:
                    self.violation(f"{collection}/{source}: deleted but searchable", "deleted-found")
                continue
            expected = sections(doc, found)
            entry = listed[source]
            if entry["status"] != "indexed" or entry["chunks"] != expected:
                self.violation(
                    f"{collection}/{source}: listed {entry['status']} with {entry['chunks']} chunks, "
                    f"expected indexed with {expected}",
                    "duplicated" if entry["chunks"] > expected else "lost",
                )
            if set(parts) != {(found, p) for p in range(expected)} or max(parts.values()) > 1:
                self.violation(
                    f"{collection}/{source}: search finds parts {sorted(parts.elements())}, expected {expected} of v{found}",
                    "duplicated",
                )
        leftovers = list((self.data / "uploads").glob("*/.*.part"))
        if leftovers:
            self.violation(f"partial uploads left after a restart: {leftovers}", "orphaned")
        self.counts[f"{collection} documents checked"] += len(docs)

    def run(self) -> int:
        if self.args.redis:
            self.start_redis()
        started = time.monotonic()
        try:
            self.start()
            created = httpx.post(f"{self.url}/collections", json={"name": "up"}, timeout=60)
            if created.status_code not in (201, 409):
                raise SystemExit(f"creating collection 'up' answered {created.status_code}: {created.text}")
            deadline = started + self.args.minutes * 60 if self.args.minutes else float("inf")
            while self.counts["kills"] < self.args.kills and time.monotonic() < deadline:
                self.round()
                self.start()
                try:
                    with httpx.Client() as client:
                        self.settle(client)
                        self.check_collection(client, "up")
                        self.check_collection(client, "folder")
                except (httpx.HTTPError, ValueError) as exc:  # the server failed a check's request: a finding
                    self.violation(f"a request after the restart failed: {exc!r}", "errors")
                if self.counts["kills"] % 10 == 0:
                    self.report(time.monotonic() - started)
        finally:
            self.stop()
        self.report(time.monotonic() - started)
        if not self.violations and not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.violations else 0

    def report(self, seconds: float) -> None:
        kinds = (
            "errors",
            "lost",
            "duplicated",
            "orphaned",
            "stuck",
            "half-replaced",
            "deleted-found",
            "resurrected",
            "wrong-delete-report",
        )
        line = " ".join(f"{k}={self.counts[k]}" for k in kinds)
        rest = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if k not in kinds)
        starts = self.counts["kills"] + 1
        print(
            f"[{seconds:.0f} s] {line} | {rest} | mean start {self.counts['start seconds x100'] / 100 / starts:.2f} s",
            flush=True,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--redis", action="store_true", help="jobs in a redis-server (AOF) that is killed too"
    )
    parser.add_argument("--docs", type=int, default=12, help="documents per collection")
    parser.add_argument(
        "--max-round", type=float, default=4.0, help="longest a round runs before its kill (s)"
    )
    parser.add_argument("--reindex", type=float, default=0.03, help="share of operations that reindex")
    parser.add_argument(
        "--settle", type=float, default=300.0, help="after this long an unfinished job is stuck"
    )
    parser.add_argument(
        "--minutes", type=float, default=0, help="stop after this long, at most --kills (0: no limit)"
    )
    parser.add_argument("--workdir", help="keep everything here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder even without violations")
    args = parser.parse_args()
    if not 1 <= args.docs <= 25:
        parser.error("--docs: 1 to 25 (one search must find every chunk)")
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
