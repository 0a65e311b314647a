"""The CLI's bar for a running ingest or reindex: done of total, phase, chunks written and failures so far.

Drawn on stderr for people at a terminal; scripts (no terminal) see nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingest.progress import IngestProgress


def describe(progress: IngestProgress) -> str:
    """The text beside the bar, in rich markup: '3/40 files, embedding, 120 chunks written, 1 failed'."""
    if progress.files_total is None:
        return f"chunks, {progress.phase}"
    failed = f"[red]{progress.failed} failed[/red]" if progress.failed else "0 failed"
    return f"files, {progress.phase}, {progress.chunks_written} chunks written, {failed}"


@contextmanager
def ingest_progress_bar(label: str, console: Console) -> Iterator[Callable[[IngestProgress], None]]:
    """A callback that draws each snapshot it is given, until the block ends."""
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[details]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None, details="")

        def show(progress: IngestProgress) -> None:
            done, total = progress.done_of_total()
            bar.update(task, completed=done, total=total, details=describe(progress))

        yield show
