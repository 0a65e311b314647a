"""What deletion that leaves nothing readable costs, two ways, on Qdrant Edge shards of N chunks (384-d dense,
~100-term BM25, ~1 KB of text, 10 chunks a document):

- sealed (what ragsvc does): each chunk's text encrypted with its document's key; a delete destroys the key.
  Printed: ingest (upsert) and query overhead against the plain engine, and the cost of one delete.
- compact-and-rotate: after a delete, copy every live point into a fresh shard and drop the old one, so the
  WAL and segments no longer hold the deleted point; its cost grows with the collection, per delete.

    python -m bench.delete --points 2000 10000
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import qdrant_edge as q

from indexes.edge import EdgeEngine
from indexes.engine import ChunkPoint, Filter, SparseVector, VectorEngine
from indexes.keys import SqliteDocumentKeys
from indexes.sealed import SealedEngine

DIMENSIONS = 384
CHUNKS_PER_DOC = 10
WORDS = "the of calibrate widget cluster slurm module python storage quota job array gpu node".split()


def points(n: int, rng: random.Random) -> list[ChunkPoint]:
    made = []
    for i in range(n):
        doc = i // CHUNKS_PER_DOC
        text = " ".join(rng.choice(WORDS) for _ in range(160))
        payload = {
            "source": f"doc{doc}.md",
            "origin": "/docs",
            "doc_hash": f"{doc:016x}",
            "title": f"Document {doc}",
            "section": "Section",
            "section_trail": ["Document", "Section"],
            "text": text,
            "position": i % CHUNKS_PER_DOC,
            "tokens": 200,
        }
        dense = [rng.gauss(0, 1) for _ in range(DIMENSIONS)]
        terms = sorted(rng.sample(range(1 << 30), 100))
        made.append(ChunkPoint(str(uuid.uuid4()), dense, SparseVector(terms, [1.0] * 100), payload))
    return made


def timed(step) -> float:  # noqa: ANN001 - any callable
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def fill(engine: VectorEngine, batch: list[ChunkPoint]) -> float:
    engine.create_index("kb", DIMENSIONS)
    return sum(
        timed(lambda d=d: engine.upsert("kb", batch[d : d + CHUNKS_PER_DOC]))
        for d in range(0, len(batch), CHUNKS_PER_DOC)
    )


def query_ms(engine: VectorEngine, batch: list[ChunkPoint], rounds: int = 200) -> float:
    samples = []
    for i in range(rounds):
        p = batch[(i * 37) % len(batch)]
        samples.append(
            timed(lambda p=p: engine.query("kb", dense=p.dense, sparse=p.sparse, mode="hybrid", limit=5))
        )
    return statistics.median(samples) * 1000


def delete_ms(engine: VectorEngine, docs: int, rounds: int = 20) -> float:
    return (
        statistics.median(
            timed(lambda d=d: engine.delete("kb", Filter(must={"source": f"doc{d}.md"})))
            for d in range(rounds)
        )
        * 1000
        if docs >= rounds
        else float("nan")
    )


def compact_and_rotate_s(folder: Path) -> float:
    """Copy the live points of the shard in `folder` into a fresh shard, then drop the old one."""
    started = time.perf_counter()
    old = q.EdgeShard.load(str(folder))
    fresh = folder.with_name(folder.name + "-compacted")
    config = q.EdgeConfig(
        vectors={"dense": q.EdgeVectorParams(size=DIMENSIONS, distance=q.Distance.Cosine)},
        sparse_vectors={"bm25": q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
    )
    new = q.EdgeShard.create(str(fresh), config)
    for key in ("source", "origin", "doc_hash", "file_type"):
        new.update(q.UpdateOperation.create_field_index(key, q.KeywordIndexParams(enable_hnsw=False)))
    offset = None
    while True:
        records, offset = old.scroll(
            q.ScrollRequest(offset=offset, limit=1000, with_payload=True, with_vector=True)
        )
        if records:
            new.update(q.UpdateOperation.upsert_points([q.Point(r.id, r.vector, r.payload) for r in records]))
        if offset is None:
            break
    new.flush()
    old.close()
    new.close()
    shutil.rmtree(folder)
    fresh.rename(folder)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, nargs="+", default=[2000, 10000])
    args = parser.parse_args()
    rng = random.Random(7)
    print(
        "points | upsert plain s | upsert sealed s | x | query plain ms | query sealed ms | delete plain ms "
        "| delete sealed ms | compact-and-rotate s (per delete)"
    )
    for n in args.points:
        batch = points(n, rng)
        with tempfile.TemporaryDirectory(prefix="ragsvc-bench-delete-") as tmp:
            root = Path(tmp)
            plain = EdgeEngine(root / "plain")
            sealed = SealedEngine(EdgeEngine(root / "sealed"), SqliteDocumentKeys(root / "keys.db"))
            up_plain, up_sealed = fill(plain, batch), fill(sealed, batch)
            q_plain, q_sealed = query_ms(plain, batch), query_ms(sealed, batch)
            d_plain, d_sealed = delete_ms(plain, n // CHUNKS_PER_DOC), delete_ms(sealed, n // CHUNKS_PER_DOC)
            folder = (root / "plain" / "kb").resolve()
            plain.close()
            sealed.close()
            compact = compact_and_rotate_s(folder)
        print(
            f"{n} | {up_plain:.2f} | {up_sealed:.2f} | {up_sealed / up_plain:.2f} | {q_plain:.2f} | "
            f"{q_sealed:.2f} | {d_plain:.2f} | {d_sealed:.2f} | {compact:.2f}"
        )


if __name__ == "__main__":
    main()
