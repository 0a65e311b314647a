"""Building a collection's live index after an ingestion, reported in the job's result.

The chunks are written before this runs, so a failed build fails nothing: it is logged and reported, and
the index keeps serving (by brute force, on the embedded engine) until a later build succeeds.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from indexes.engine import VectorEngine
from indexes.errors import IndexBuildFailed, IndexNotFound

log = logging.getLogger("ragsvc.indexes")


def build_after_ingest(engine: VectorEngine, index: str) -> dict[str, Any]:
    """Build `index` (at once when there is little new to index) and say what happened."""
    try:
        return dataclasses.asdict(engine.build(index))
    except IndexBuildFailed as exc:
        log.warning("building index %s after an ingestion failed: %s", index, exc.message)
        return {"index": index, "built": False, "reason": "failed", "error": exc.message}
    except IndexNotFound:  # the collection was deleted or switched to another index meanwhile
        return {"index": index, "built": False, "reason": "the index is gone"}
