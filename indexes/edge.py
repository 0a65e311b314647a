"""Qdrant Edge engine: Qdrant's Rust engine in-process, one shard directory per physical index.

A shard opens in one process only; the caller (the process that owns the data dir) keeps them open.
`build` runs the HNSW build in a child process on a copy of the shard and then switches to the copy: Edge's
optimize() holds the GIL for its whole run and would freeze every request of the serving process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import qdrant_edge as q

from indexes.edge_folders import IndexFolders, remove
from indexes.edge_shard import (
    INDEX_META,
    configured_dense_size,
    create_shard,
    dimension_errors,
    edge_filter,
    edge_points,
    load_shard,
    read_dense_size,
    shard_hits,
    write_meta,
)
from indexes.engine import (
    BuildReport,
    ChunkPoint,
    Filter,
    Hit,
    SearchMode,
    SparseVector,
    check_delete_filter,
    check_dense_size,
    check_index_name,
    check_points,
    check_query,
)
from indexes.errors import IndexBuildFailed, IndexExists, IndexNotFound

# Edge's default indexing threshold: a segment with less dense vector data than this is searched by brute
# force and optimize() leaves it alone (measured at 384-d: 6,000 points stay plain, 7,000 are indexed).
INDEXING_THRESHOLD_BYTES = 10_000 * 1024
BUILD_TIMEOUT_S = 3600.0
# Writes are flushed every this many points. A flush holds the serving process's GIL as long as it takes, which
# grows with what is unflushed: a build flushes before its copy, so after a bulk ingest the whole backlog stalled
# searches at once (5.0 s at 1M). Every 20k points, a flush took 0.15-0.38 s at 300k points, 0.94 s at 1M.
FLUSH_EVERY_POINTS = 20_000
# The build process runs at this niceness, so that on a busy machine the serving process gets the CPU first.
BUILD_NICENESS = 10


@dataclass(eq=False)
class _OpenShard:
    """One loaded shard folder and the queries running on it; it is closed only once none runs."""

    shard: q.EdgeShard
    folder: Path
    readers: int = 0


@dataclass(eq=False)
class _Index:
    """An open physical index: the shard that answers now, and what a running build needs."""

    live: _OpenShard
    dense_size: int | None  # None: a shard made before INDEX_META; the binding's error is translated then
    unindexed: int  # points written since the last build (all of them after a restart: not known)
    unflushed: int = 0  # points written since the last flush (deletes count one each)
    closed: bool = False
    # Writes made while a build runs, replayed onto the built copy before it is switched in.
    journal: list[q.UpdateOperation] | None = None
    child: subprocess.Popen[str] | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)  # guards live, readers, closed
    write_lock: threading.Lock = field(default_factory=threading.Lock)  # one writer, or a build's two steps
    build_lock: threading.Lock = field(default_factory=threading.Lock)  # one build at a time


class EdgeEngine:
    """Physical indexes as Qdrant Edge shards under `root`, opened lazily and kept open until `close`.

    On disk, `root/NAME` is a symbolic link to the live shard folder `root/.NAME@N` (a plain folder in data
    dirs made before builds switched folders); a build makes `.NAME@N+1` and moves the link in one rename.
    Opening an engine removes what a crash left behind, so only the process that owns the data dir may.
    """

    def __init__(
        self,
        root: Path,
        *,
        build_timeout: float = BUILD_TIMEOUT_S,
        build_niceness: int = BUILD_NICENESS,
    ) -> None:
        self.root = root
        self.folders = IndexFolders(root)
        self.build_timeout = build_timeout
        self.build_niceness = build_niceness
        self.builds: dict[str, BuildReport] = {}
        self._indexes: dict[str, _Index] = {}
        self._lock = threading.Lock()  # guards _indexes and the links on disk
        self.folders.recover()

    def _exists(self, name: str) -> bool:
        return name in self._indexes or self.folders.exists(name)

    # --- open shards -----------------------------------------------------------------------------------

    def _index(self, name: str) -> _Index:
        with self._lock:
            index = self._indexes.get(name)
            if index is None:
                check_index_name(name)
                if not self.folders.exists(name):
                    raise IndexNotFound(name)
                # Edge keeps the path it was given and reopens files by it: load the folder itself, never the
                # link, or a later switch of the link would send this shard's writes into another folder.
                folder = self.folders.path(name).resolve()
                shard = load_shard(folder, name)
                points = shard.count(q.CountRequest(exact=True))
                index = _Index(_OpenShard(shard, folder), read_dense_size(folder), unindexed=points)
                self._indexes[name] = index
            return index

    @contextmanager
    def _reading(self, name: str) -> Iterator[q.EdgeShard]:
        """The shard that answers now; a build's switch never waits for this, and the old shard is closed
        only when the last query on it is done."""
        index = self._index(name)
        with index.changed:
            if index.closed:
                raise IndexNotFound(name)
            live = index.live
            live.readers += 1
        try:
            yield live.shard
        finally:
            with index.changed:
                live.readers -= 1
                index.changed.notify_all()

    @contextmanager
    def _writing(self, name: str, index: _Index | None = None) -> Iterator[_Index]:
        """The index under its write lock; with `index`, that one (not one made since under the same name)."""
        index = index or self._index(name)
        with index.write_lock:
            if index.closed:
                raise IndexNotFound(name)
            yield index

    def _write(
        self, name: str, index: _Index, operation: q.UpdateOperation, operation_points: int = 1
    ) -> None:
        """Apply under the index's write lock; a build running now replays it onto its copy. The shard is
        flushed when FLUSH_EVERY_POINTS points were written since its last flush."""
        with dimension_errors(name):
            index.live.shard.update(operation)
        if index.journal is not None:
            index.journal.append(operation)
        index.unflushed += max(1, operation_points)
        if index.unflushed >= FLUSH_EVERY_POINTS:
            index.live.shard.flush()
            index.unflushed = 0

    @staticmethod
    def _close_when_idle(index: _Index, old: _OpenShard) -> None:
        with index.changed:
            while old.readers:
                index.changed.wait()
        old.shard.close()

    # --- the contract ----------------------------------------------------------------------------------

    def create_index(self, name: str, dense_size: int) -> None:
        check_index_name(name)
        check_dense_size(dense_size)
        with self._lock:
            if self._exists(name):
                raise IndexExists(name)
            # a new number: a drop of this name may still be closing its last shard (the next start removes
            # folders no link leads to)
            folder = self.folders.next_folder(name)
            shard: q.EdgeShard | None = None
            try:
                shard = create_shard(folder, dense_size)
                self.folders.point(name, folder)
            except BaseException:
                # never leave a half-made shard behind: has_index would call it an index
                if shard is not None:
                    shard.close()
                remove(self.folders.path(name))
                remove(folder)
                raise
            self._indexes[name] = _Index(_OpenShard(shard, folder), dense_size, unindexed=0)

    def drop_index(self, name: str) -> None:
        """Drop the index and its files; dropping one that does not exist does nothing."""
        check_index_name(name)
        with self._lock:
            index = self._indexes.pop(name, None)
            path = self.folders.path(name)
            if path.is_symlink():
                path.unlink()  # the index is gone from here on; its folders go below
            elif path.exists():
                dropped = self.root / f".{name}@dropped"
                os.replace(path, dropped)
        if index is not None:
            _kill(index.child)  # a build of a dropped index has nothing to switch to
            with index.write_lock:
                with index.changed:
                    index.closed = True
                self._close_when_idle(index, index.live)
        with self._lock:
            if not self._exists(name):
                for entry in self.folders.folders(name):
                    remove(entry)

    def has_index(self, name: str) -> bool:
        check_index_name(name)
        return self._exists(name)

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        index = self._index(name)
        check_points(name, index.dense_size, points)
        if not points:
            return
        operation = q.UpdateOperation.upsert_points(edge_points(points))
        with self._writing(name) as index:
            self._write(name, index, operation, len(points))
            index.unindexed += len(points)

    def delete(self, name: str, where: Filter) -> None:
        self._index(name)
        check_delete_filter(where)
        operation = q.UpdateOperation.delete_points_by_filter(edge_filter(where))
        with self._writing(name) as index:
            self._write(name, index, operation)

    def query(
        self,
        name: str,
        *,
        dense: list[float] | None,
        sparse: SparseVector | None,
        mode: SearchMode,
        limit: int,
        where: Filter | None = None,
    ) -> list[Hit]:
        index = self._index(name)
        check_query(name, index.dense_size, dense=dense, sparse=sparse, mode=mode, limit=limit)
        with self._reading(name) as shard, dimension_errors(name):
            return shard_hits(shard, dense=dense, sparse=sparse, mode=mode, limit=limit, where=where)

    def count(self, name: str, where: Filter | None = None) -> int:
        with self._reading(name) as shard:
            return shard.count(q.CountRequest(exact=True, filter=edge_filter(where)))

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]:
        # the index is opened here, not in the generator, so a missing index raises at the call
        self._index(name)
        return self._scroll(name, edge_filter(where), batch)

    def _scroll(self, name: str, edge_filter: q.Filter | None, batch: int) -> Iterator[Hit]:
        offset: str | uuid.UUID | None = None
        while True:
            # each batch asks the shard that answers now: a build may switch shards between batches, and
            # point ids (the offset) are the same in both
            with self._reading(name) as shard:
                records, offset = shard.scroll(
                    q.ScrollRequest(
                        offset=offset, limit=batch, filter=edge_filter, with_payload=True, with_vector=False
                    )
                )
            for record in records:
                yield Hit(str(record.id), 1.0, dict(record.payload or {}))
            if offset is None:
                return

    def build(self, name: str) -> BuildReport:
        """Build the HNSW index of `name` in a child process, on a copy, while this one keeps serving.

        Queries go on answering from the live shard throughout and wait on no lock; they pause only while
        the binding holds the GIL for the flush before the copy, which is short because writes are flushed
        every FLUSH_EVERY_POINTS (at 1M points on 2 cores: flush 0.2 s, and loading the copy (1.2 s) and
        closing the old shard (3.6 s) let searches go on: none waited more than 0.23 s). Writes wait while
        the flushed shard is copied and while the built copy is loaded, caught up and switched in; writes made during the build itself
        go to the live shard and are replayed onto the copy. A build that fails (the child dies, or times
        out) leaves the live shard as it was and raises IndexBuildFailed. Below Edge's indexing threshold
        there is nothing to build and this returns at once.
        """
        index = self._index(name)
        with index.build_lock:
            with self._writing(name, index):
                pending = index.unindexed
                dense_size = index.dense_size or configured_dense_size(index.live.folder)
                if pending * dense_size * 4 < INDEXING_THRESHOLD_BYTES:
                    report = BuildReport(name, False, "below the indexing threshold", pending)
                    self.builds[name] = report
                    return report
                started = time.perf_counter()
                index.live.shard.flush()
                index.unflushed = 0
                flush_s = time.perf_counter() - started
                folder = self.folders.next_folder(name)
                try:
                    # INDEX_META is left out: it is written last, when the copy is complete and caught up
                    shutil.copytree(index.live.folder, folder, ignore=shutil.ignore_patterns(INDEX_META))
                except BaseException:
                    remove(folder)
                    raise
                index.journal = []
                report = BuildReport(name, True, "built", pending, copy_s=time.perf_counter() - started)
                report.flush_s = flush_s
            switched = False
            try:
                optimized, report.optimize_s, report.segments = self._optimize_in_child(name, index, folder)
                with self._writing(name, index):
                    if not optimized:
                        report.built, report.reason = False, "already built"
                        index.unindexed -= pending
                        return report
                    started = time.perf_counter()
                    report.replayed_writes = len(index.journal or [])
                    old, plain, report.load_s = self._switch(name, index, folder, dense_size)
                    switched = True
                    index.unindexed -= pending
                    if plain:  # a plain folder from before is moved aside, which needs its shard closed
                        self._close_when_idle(index, old)
                        with self._lock:
                            self.folders.finish_switch(name, folder)
                        remove(self.folders.folder(name, 0))
                    report.switch_s = time.perf_counter() - started
                if not plain:  # writers need not wait for this
                    started = time.perf_counter()
                    self._close_when_idle(index, old)
                    report.close_s = time.perf_counter() - started
                    remove(old.folder)
                return report
            finally:
                with index.write_lock:
                    index.journal = None
                if not switched:
                    remove(folder)
                    if report.built:
                        report.built, report.reason = False, "failed"
                self.builds[name] = report

    def _optimize_in_child(self, name: str, index: _Index, folder: Path) -> tuple[bool, float, int]:
        worker = [sys.executable, "-m", "indexes.build_worker"]
        command = [*worker, str(folder), "--nice", str(self.build_niceness)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        index.child = child
        try:
            out, err = child.communicate(timeout=self.build_timeout)
        except subprocess.TimeoutExpired:
            _kill(child)
            child.communicate()
            raise IndexBuildFailed(
                f"building index {name!r} did not finish in {self.build_timeout:.0f} s; it keeps serving "
                "unbuilt (brute force)"
            ) from None
        finally:
            index.child = None
        if child.returncode != 0:
            detail = err.strip().splitlines()[-1] if err.strip() else f"exit status {child.returncode}"
            raise IndexBuildFailed(
                f"building index {name!r} failed ({detail}); it keeps serving unbuilt (brute force)"
            )
        result = json.loads(out.strip().splitlines()[-1])
        return bool(result["optimized"]), float(result["seconds"]), int(result["segments"])

    def _switch(
        self, name: str, index: _Index, folder: Path, dense_size: int
    ) -> tuple[_OpenShard, bool, float]:
        """Catch the built copy up with the journal and make it the live shard (under the write lock).

        Returns the old shard, for the caller to close once its last query is done, and whether the index
        was a plain folder from before, which the caller moves aside then (a switch intent records it), and
        the seconds loading the copy took."""
        started = time.perf_counter()
        built = load_shard(folder, name)
        load_s = time.perf_counter() - started
        try:
            # No flush: the child flushed the built segments, and the replayed writes are in the copy's WAL
            # as every write is; a flush would hold the GIL (0.3 s at 20k points) and stall queries.
            for operation in index.journal or []:
                built.update(operation)
            write_meta(folder, dense_size)
        except BaseException:
            built.close()
            raise
        old = index.live
        with self._lock:
            if self.folders.path(name).is_symlink():
                self.folders.point(name, folder)
                plain = False
            else:  # a plain folder from before: it can be moved aside only once its shard is closed
                self.folders.switch_intent(name).write_text(folder.name)
                plain = True
        with index.changed:
            index.live = _OpenShard(built, folder)
        return old, plain, load_s

    def building_pid(self, name: str) -> int | None:
        """The id of the process building `name` now, or None when no build of it is running."""
        index = self._indexes.get(name)
        child = index.child if index is not None else None
        return child.pid if child is not None and child.poll() is None else None

    def flush(self) -> None:
        with self._lock:
            indexes = list(self._indexes.values())
        for index in indexes:
            with index.write_lock:
                if not index.closed:
                    index.live.shard.flush()
                    index.unflushed = 0

    def close(self) -> None:
        with self._lock:
            indexes = list(self._indexes.values())
            self._indexes.clear()
        for index in indexes:
            _kill(index.child)  # a build in flight fails and removes its copy
            with index.write_lock:
                with index.changed:
                    if index.closed:
                        continue
                    index.closed = True
                index.live.shard.flush()
                self._close_when_idle(index, index.live)


def _kill(child: subprocess.Popen[str] | None) -> None:
    if child is not None and child.poll() is None:
        child.kill()
