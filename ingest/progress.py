"""Where a running ingestion or reindex stands: one snapshot shape for the CLI's bar, the job record and the API.

Counts only; the failed files' names and reasons are in the final summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

Phase = Literal["queued", "parsing", "embedding", "writing", "removing", "building index", "done"]


class IngestProgress(BaseModel):
    """Counts so far; each one only grows while a run goes on. A reindex counts chunks and no files."""

    phase: Phase = "queued"
    files_done: int = Field(
        0, description="files of files_total dealt with: stored, unchanged, empty or failed"
    )
    files_total: int | None = Field(None, description="doc files found in the folder; none for a reindex")
    chunks_written: int = Field(0, description="chunks embedded and stored so far")
    chunks_total: int | None = Field(None, description="chunks to re-embed, for a reindex")
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = Field(0, description="passed over with a reason: links out of the folder, empty files...")
    failed: int = 0

    def done_of_total(self) -> tuple[int, int | None]:
        """What a progress bar shows: files for an ingest, chunks for a reindex."""
        if self.files_total is not None:
            return self.files_done, self.files_total
        return self.chunks_written, self.chunks_total


Progress = Callable[[IngestProgress], None]
