"""Qdrant Edge engine: Qdrant's Rust engine in-process, one shard directory per physical index.

A shard opens in one process only; the caller (the process that owns the data dir) keeps them open.
`build` runs the HNSW build in a child process on a copy of the shard and then switches to the copy: Edge's
optimize() holds the GIL for its whole run and would freeze every request of the serving process.
"""

from __future__ import annotations

import json
import os
import re
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

from indexes.engine import (
    DENSE,
    SPARSE,
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
from indexes.errors import IndexBuildFailed, IndexExists, IndexNotFound, StoreBusy, VectorSizeMismatch

# Payload fields that filters and deletions use; keyword indexes keep those fast at any size. They are made
# without HNSW subgraphs (enable_hnsw=False): filters on them select few points and need none. (Reported:
# 43 s instead of 27 s to build 100k points with subgraphs. bench/search.py --payload-hnsw found no
# difference here: 48.0 against 46.5 CPU seconds at 100k, 4.2 against 4.4 at 20k.)
KEYWORD_FIELDS = ("source", "origin", "doc_hash", "file_type")
# How many candidates each branch of a hybrid query hands to rank fusion.
PREFETCH_FACTOR = 4
RRF_K = 60
# Dense first, sparse second. Equal weights make exact ties common (rank 1 + rank 3 against rank 3 + rank 1),
# and tied points come back in varying order; a hair's preference for the dense list makes the order fixed.
RRF_WEIGHTS = [1.0, 0.999]
# ragsvc's own record of a shard's dense size, next to Edge's files, so sizes are checked before a call.
# It is written last into a shard folder: a folder without it is a build that did not finish.
INDEX_META = "ragsvc-index.json"
# Edge's default indexing threshold: a segment with less dense vector data than this is searched by brute
# force and optimize() leaves it alone (measured at 384-d: 6,000 points stay plain, 7,000 are indexed).
INDEXING_THRESHOLD_BYTES = 10_000 * 1024
BUILD_TIMEOUT_S = 3600.0
# The build process runs at this niceness, so that on a busy machine the serving process gets the CPU first.
BUILD_NICENESS = 10
# The binding raises bare Exceptions; this one is translated for shards made before INDEX_META existed.
_DIMENSION_ERROR = re.compile(r"Vector dimension error: expected dim: (\d+), got (\d+)")


def _condition(key: str, value: object) -> q.FieldCondition:
    if isinstance(value, list | tuple | set):
        return q.FieldCondition(key, match=q.MatchAny(list(value)))
    return q.FieldCondition(key, match=q.MatchValue(value))


def _edge_filter(where: Filter | None) -> q.Filter | None:
    if where is None or where.is_empty():
        return None
    return q.Filter(
        must=[_condition(k, v) for k, v in where.must.items()] or None,
        must_not=[_condition(k, v) for k, v in where.must_not.items()] or None,
    )


def _sparse(vector: SparseVector) -> q.SparseVector:
    return q.SparseVector(vector.indices, vector.values)


@contextmanager
def _dimension_errors(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # the binding raises a bare Exception
        found = _DIMENSION_ERROR.search(str(exc))
        if found is None:
            raise
        raise VectorSizeMismatch(name, int(found[1]), int(found[2])) from exc


def _write_meta(path: Path, dense_size: int) -> None:
    tmp = path / f"{INDEX_META}.tmp"
    tmp.write_text(json.dumps({"dense_size": dense_size}))
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path / INDEX_META)


def _read_dense_size(path: Path) -> int | None:
    try:
        return int(json.loads((path / INDEX_META).read_text())["dense_size"])
    except FileNotFoundError:
        return None


def _configured_dense_size(path: Path) -> int:
    """The dense size in Edge's own config file, for shards made before INDEX_META existed."""
    return int(json.loads((path / "edge_config.json").read_text())["vectors"][DENSE]["size"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self.root.mkdir(parents=True, exist_ok=True)
        self.build_timeout = build_timeout
        self.build_niceness = build_niceness
        self.builds: dict[str, BuildReport] = {}
        self._indexes: dict[str, _Index] = {}
        self._lock = threading.Lock()  # guards _indexes and the links on disk
        self._recover()

    # --- folders ---------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.root / name

    def _folder(self, name: str, generation: int) -> Path:
        # a leading "." makes it a name no index can have, so folders never collide with indexes
        return self.root / f".{name}@{generation}"

    def _folders(self, name: str) -> list[Path]:
        """Every internal entry of index `name`: shard folders, the temporary link, the switch intent."""
        # index names hold only letters, digits, "_", "-" and ".", none special to glob, and never "@"
        return sorted(self.root.glob(f".{name}@*"))

    def _next_folder(self, name: str) -> Path:
        numbers = [0]
        for entry in self._folders(name):
            tail = entry.name.rpartition("@")[2]
            if tail.isdigit():
                numbers.append(int(tail))
        return self._folder(name, max(numbers) + 1)

    def _point(self, name: str, folder: Path) -> None:
        """Make `root/name` lead to `folder` in one rename: a crash leaves the old link or the new one."""
        tmp = self.root / f".{name}@link"
        tmp.unlink(missing_ok=True)
        os.symlink(folder.name, tmp)
        os.replace(tmp, self._path(name))
        _fsync_dir(self.root)

    def _switch_intent(self, name: str) -> Path:
        return self.root / f".{name}@switch"

    def _recover(self) -> None:
        """Finish or undo what a crash interrupted, so each index has one loadable shard: its link's."""
        names = {entry.name[1:].rpartition("@")[0] for entry in self.root.glob(".*@*")}
        for name in names:
            intent = self._switch_intent(name)
            if intent.exists():
                self._finish_switch(name, self.root / intent.read_text().strip())
            live = self._path(name).resolve() if self._exists_on_disk(name) else None
            for entry in self._folders(name):
                if entry.resolve() != live:
                    _remove(entry)

    def _finish_switch(self, name: str, built: Path) -> None:
        """Move a plain index folder aside and link `name` to `built` (a crash may stop this anywhere)."""
        path = self._path(name)
        if (built / INDEX_META).exists() and not path.is_symlink():
            if path.exists():
                os.replace(path, self._folder(name, 0))
            self._point(name, built)
        self._switch_intent(name).unlink(missing_ok=True)

    def _exists_on_disk(self, name: str) -> bool:
        return (self._path(name) / "wal").exists()

    def _exists(self, name: str) -> bool:
        return name in self._indexes or self._exists_on_disk(name)

    # --- open shards -----------------------------------------------------------------------------------

    def _index(self, name: str) -> _Index:
        with self._lock:
            index = self._indexes.get(name)
            if index is None:
                check_index_name(name)
                if not self._exists_on_disk(name):
                    raise IndexNotFound(name)
                # Edge keeps the path it was given and reopens files by it: load the folder itself, never the
                # link, or a later switch of the link would send this shard's writes into another folder.
                folder = self._path(name).resolve()
                shard = _load(folder, name)
                points = shard.count(q.CountRequest(exact=True))
                index = _Index(_OpenShard(shard, folder), _read_dense_size(folder), unindexed=points)
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

    def _write(self, name: str, index: _Index, operation: q.UpdateOperation) -> None:
        """Apply under the index's write lock; a build running now replays it onto its copy."""
        with _dimension_errors(name):
            index.live.shard.update(operation)
        if index.journal is not None:
            index.journal.append(operation)

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
        config = q.EdgeConfig(
            vectors={DENSE: q.EdgeVectorParams(size=dense_size, distance=q.Distance.Cosine)},
            sparse_vectors={SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
        )
        with self._lock:
            if self._exists(name):
                raise IndexExists(name)
            # a new number: a drop of this name may still be closing its last shard (the next start removes
            # folders no link leads to)
            folder = self._next_folder(name)
            shard: q.EdgeShard | None = None
            try:
                shard = q.EdgeShard.create(str(folder), config)
                for key in KEYWORD_FIELDS:
                    schema = q.KeywordIndexParams(enable_hnsw=False)
                    shard.update(q.UpdateOperation.create_field_index(key, schema))
                _write_meta(folder, dense_size)
                self._point(name, folder)
            except BaseException:
                # never leave a half-made shard behind: has_index would call it an index
                if shard is not None:
                    shard.close()
                _remove(self._path(name))
                _remove(folder)
                raise
            self._indexes[name] = _Index(_OpenShard(shard, folder), dense_size, unindexed=0)

    def drop_index(self, name: str) -> None:
        """Drop the index and its files; dropping one that does not exist does nothing."""
        check_index_name(name)
        with self._lock:
            index = self._indexes.pop(name, None)
            path = self._path(name)
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
                for entry in self._folders(name):
                    _remove(entry)

    def has_index(self, name: str) -> bool:
        check_index_name(name)
        return self._exists(name)

    def upsert(self, name: str, points: Sequence[ChunkPoint]) -> None:
        index = self._index(name)
        check_points(name, index.dense_size, points)
        if not points:
            return
        edge_points = [q.Point(p.id, {DENSE: p.dense, SPARSE: _sparse(p.sparse)}, p.payload) for p in points]
        operation = q.UpdateOperation.upsert_points(edge_points)
        with self._writing(name) as index:
            self._write(name, index, operation)
            index.unindexed += len(points)

    def delete(self, name: str, where: Filter) -> None:
        self._index(name)
        check_delete_filter(where)
        operation = q.UpdateOperation.delete_points_by_filter(_edge_filter(where))
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
        edge_filter = _edge_filter(where)
        if mode == "dense":
            request = q.QueryRequest(
                limit=limit, query=q.Query.Nearest(dense, using=DENSE), filter=edge_filter, with_payload=True
            )
        elif mode == "sparse":
            request = q.QueryRequest(
                limit=limit,
                query=q.Query.Nearest(_sparse(sparse), using=SPARSE),
                filter=edge_filter,
                with_payload=True,
            )
        else:
            branch = max(limit * PREFETCH_FACTOR, 20)
            request = q.QueryRequest(
                limit=limit,
                prefetches=[
                    q.Prefetch(limit=branch, query=q.Query.Nearest(dense, using=DENSE), filter=edge_filter),
                    q.Prefetch(
                        limit=branch, query=q.Query.Nearest(_sparse(sparse), using=SPARSE), filter=edge_filter
                    ),
                ],
                query=q.Fusion.Rrf(k=RRF_K, weights=RRF_WEIGHTS),
                with_payload=True,
            )
        with self._reading(name) as shard, _dimension_errors(name):
            points = shard.query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def count(self, name: str, where: Filter | None = None) -> int:
        with self._reading(name) as shard:
            return shard.count(q.CountRequest(exact=True, filter=_edge_filter(where)))

    def scroll(self, name: str, where: Filter | None = None, batch: int = 256) -> Iterator[Hit]:
        # the index is opened here, not in the generator, so a missing index raises at the call
        self._index(name)
        return self._scroll(name, _edge_filter(where), batch)

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
        the binding holds the GIL here: flushing the shard before the copy, loading the built copy, closing
        the old shard (each a few hundred ms at 100k points). Writes wait while the flushed shard is copied
        and while the built copy is loaded, caught up and switched in; writes made during the build itself
        go to the live shard and are replayed onto the copy. A build that fails (the child dies, or times
        out) leaves the live shard as it was and raises IndexBuildFailed. Below Edge's indexing threshold
        there is nothing to build and this returns at once.
        """
        index = self._index(name)
        with index.build_lock:
            with self._writing(name, index):
                pending = index.unindexed
                dense_size = index.dense_size or _configured_dense_size(index.live.folder)
                if pending * dense_size * 4 < INDEXING_THRESHOLD_BYTES:
                    report = BuildReport(name, False, "below the indexing threshold", pending)
                    self.builds[name] = report
                    return report
                started = time.perf_counter()
                index.live.shard.flush()
                folder = self._next_folder(name)
                try:
                    # INDEX_META is left out: it is written last, when the copy is complete and caught up
                    shutil.copytree(index.live.folder, folder, ignore=shutil.ignore_patterns(INDEX_META))
                except BaseException:
                    _remove(folder)
                    raise
                index.journal = []
                report = BuildReport(name, True, "built", pending, copy_s=time.perf_counter() - started)
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
                    old, plain = self._switch(name, index, folder, dense_size)
                    switched = True
                    index.unindexed -= pending
                    if plain:  # a plain folder from before is moved aside, which needs its shard closed
                        self._close_when_idle(index, old)
                        with self._lock:
                            self._finish_switch(name, folder)
                        _remove(self._folder(name, 0))
                    report.switch_s = time.perf_counter() - started
                if not plain:  # writers need not wait for this
                    self._close_when_idle(index, old)
                    _remove(old.folder)
                return report
            finally:
                with index.write_lock:
                    index.journal = None
                if not switched:
                    _remove(folder)
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

    def _switch(self, name: str, index: _Index, folder: Path, dense_size: int) -> tuple[_OpenShard, bool]:
        """Catch the built copy up with the journal and make it the live shard (under the write lock).

        Returns the old shard, for the caller to close once its last query is done, and whether the index
        was a plain folder from before, which the caller moves aside then (a switch intent records it)."""
        built = _load(folder, name)
        try:
            # No flush: the child flushed the built segments, and the replayed writes are in the copy's WAL
            # as every write is; a flush would hold the GIL (0.3 s at 20k points) and stall queries.
            for operation in index.journal or []:
                built.update(operation)
            _write_meta(folder, dense_size)
        except BaseException:
            built.close()
            raise
        old = index.live
        with self._lock:
            if self._path(name).is_symlink():
                self._point(name, folder)
                plain = False
            else:  # a plain folder from before: it can be moved aside only once its shard is closed
                self._switch_intent(name).write_text(folder.name)
                plain = True
        with index.changed:
            index.live = _OpenShard(built, folder)
        return old, plain

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


def _load(folder: Path, name: str) -> q.EdgeShard:
    try:
        return q.EdgeShard.load(str(folder))
    except Exception as exc:  # the binding raises a bare Exception
        if "WouldBlock" in str(exc):
            raise StoreBusy(f"index {name!r} is open in another process; stop it or go through it") from exc
        raise


def _kill(child: subprocess.Popen[str] | None) -> None:
    if child is not None and child.poll() is None:
        child.kill()


def _remove(entry: Path) -> None:
    if entry.is_symlink() or entry.is_file():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)
