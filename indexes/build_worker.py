"""Builds one Qdrant Edge shard's HNSW index in a process of its own: `python -m indexes.build_worker DIR`.

EdgeEngine.build runs it on a copy of a live shard, because optimize() holds the GIL for its whole run and
would freeze a serving process. It prints one JSON line: whether anything was optimised, how long it took.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys
import time

import qdrant_edge as q

from indexes.edge_shard import keyword_index, keyword_indexes_to_move

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Be killed when the process that started us dies (Linux): a build left running after a crash would
    compete with the restarted server for the cores and write a folder nobody will use."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the build runs to its end
        return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="a shard folder that no other process has open")
    parser.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by this much")
    args = parser.parse_args(argv)
    die_with_parent()
    if args.nice:
        os.nice(args.nice)
    shard = q.EdgeShard.load(args.folder)
    started = time.perf_counter()
    # Shards made while keyword indexes lived in RAM get them on disk here, off the serving process, so that
    # loading the built copy at the switch does not hold its GIL for seconds.
    moved = keyword_indexes_to_move(shard)
    for key in moved:
        shard.update(q.UpdateOperation.delete_field_index(key))
        shard.update(q.UpdateOperation.create_field_index(key, keyword_index()))
    optimized = shard.optimize() or bool(moved)
    seconds = time.perf_counter() - started
    info = shard.info()
    shard.flush()
    shard.close()
    result = {"optimized": optimized, "seconds": seconds, "segments": info.segments_count}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
