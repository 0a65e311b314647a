"""The `ragsvc` command line. Commands run inline when no server owns the data dir, else through that server
(ragsvc.cli_backend); errors become messages and exit statuses in one table (ragsvc.cli_errors)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ingest.embed import EmbeddingSpec
from ragsvc import access_cli
from ragsvc.cli_errors import UsageError, fail, reported
from ragsvc.cli_options import AsJson, Collection, Mode, embedding_options
from ragsvc.cli_progress import ingest_progress_bar
from ragsvc.eval_cli import eval_app
from ragsvc.llm_cli import llm_app
from ragsvc.owner import DataDirLock
from ragsvc.settings import Settings

if TYPE_CHECKING:
    from ragsvc.cli_backend import Backend
    from ragsvc.service.retrieval import Source

app = typer.Typer(
    help="ragsvc: documentation knowledge bases with grounded, cited answers.", no_args_is_help=True
)
collections_app = typer.Typer(help="Manage collections.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")
documents_app = typer.Typer(help="Manage the documents of a collection.", no_args_is_help=True)
app.add_typer(documents_app, name="documents")
app.add_typer(llm_app, name="llm")
app.add_typer(eval_app, name="eval")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    return Settings()


@contextmanager
def open_backend(settings: Settings) -> Iterator[Backend]:
    """The service layer inline, or the server that owns the data dir (imported here: `--help` and the
    commands that need neither start at once)."""
    from ragsvc.cli_backend import open_backend as opened

    with opened(settings) as backend:
        yield backend


def _where(backend: object) -> str:
    url = getattr(backend, "url", None)
    return f" through {url}" if url else ""


@app.command()
@embedding_options
def ingest(
    path: Annotated[Path, typer.Argument(help="folder of Markdown / reStructuredText / text docs")],
    collection: Collection,
    docs_base_url: Annotated[str | None, typer.Option(help="URL of the rendered docs, for links")] = None,
    build: Annotated[bool, typer.Option(help="build the HNSW index afterwards")] = True,
    embedding: EmbeddingSpec | None = None,
    as_json: AsJson = False,
) -> None:
    """Parse, chunk, embed and store the docs under PATH; unchanged files are skipped.

    A new collection is made on the --embedding-* model (default: the configured one); an existing
    collection keeps its own model (switch it with `ragsvc collections reindex`)."""
    with reported(), open_backend(_settings()) as backend:
        with ingest_progress_bar(f"ingesting{_where(backend)}", err) as show:
            summary = backend.ingest_folder(
                collection, path, docs_base_url=docs_base_url, embedding=embedding, build=build, progress=show
            )
    if as_json:
        out.print_json(summary.model_dump_json())
    else:
        out.print(
            f"[bold]{summary.collection}[/bold]: {summary.files} files — {len(summary.added)} added, "
            f"{len(summary.updated)} updated, {len(summary.unchanged)} unchanged, "
            f"{len(summary.removed)} removed, {len(summary.failed)} failed; "
            f"{summary.chunks_written} chunks written, {summary.chunks_total} in the collection "
            f"({summary.seconds:.1f} s)"
        )
        # File names and reasons (which quote names inside archives) come from the files themselves: escaped,
        # so that '[red]' or '[/x]' in them is shown, not read as markup (an unmatched closing tag would crash).
        for issue in summary.failed:
            out.print(f"  [red]failed[/red] {escape(issue.source)}: {escape(issue.reason)}", highlight=False)
        for issue in summary.skipped:
            out.print(
                f"  [yellow]skipped[/yellow] {escape(issue.source)}: {escape(issue.reason)}", highlight=False
            )
    _warn_if_unbuilt(summary.index_build)
    if summary.failed:
        raise typer.Exit(1)


def _warn_if_unbuilt(index_build: dict | None) -> None:
    """A failed build fails nothing (the chunks are stored and searched exactly): said, not an exit status."""
    if index_build and index_build.get("reason") == "failed":
        err.print(
            f"[yellow]warning:[/yellow] building the index failed ({escape(str(index_build.get('error')))}); "
            "the collection is searched without it until the next build",
            highlight=False,
        )


def _public(source: Source) -> dict:
    return source.model_dump(include={"source", "section", "score", "text", "link"})


@app.command()
def search(
    question: Annotated[str, typer.Argument()],
    collection: Collection,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=100)] = None,
    mode: Mode = None,
    as_json: AsJson = False,
) -> None:
    """Retrieve the chunks that best match QUESTION (no LLM)."""
    with reported(), open_backend(_settings()) as backend:
        results = backend.search(collection, question, top_k=top_k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        out.print_json(json.dumps([_public(r) for r in results]))
        return
    for rank, r in enumerate(results, 1):
        out.print(
            f"[bold]{rank}. {escape(r.source)}[/bold] — {escape(r.section)}  [dim]({r.score:.3f})[/dim]",
            highlight=False,
        )
        out.print("   " + " ".join(r.text.split())[:240], highlight=False, markup=False)


@app.command()
def ask(
    question: Annotated[str, typer.Argument()],
    collection: Collection,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=50)] = None,
    mode: Mode = None,
    as_json: AsJson = False,
) -> None:
    """Answer QUESTION from the collection's documents, citing them."""
    with reported(), open_backend(_settings()) as backend:
        answer = backend.ask(collection, question, top_k=top_k, mode=mode)  # type: ignore[arg-type]
    if as_json:
        shown = {
            "answer": answer.answer,
            "sources": [_public(s) for s in answer.sources],
            "refused": answer.refused,
            "closest_pages": [_public(s) for s in answer.closest_pages],
        }
        out.print_json(json.dumps(shown))
        return
    out.print(answer.answer, highlight=False, markup=False)
    out.print()
    for i, s in enumerate(answer.sources, 1):
        out.print(f"[{i}] {s.source} — {s.section}", highlight=False, markup=False)
    if answer.closest_pages:
        out.print("Closest pages:", highlight=False, markup=False)
    for s in answer.closest_pages:
        out.print(f"- {s.source} — {s.section}", highlight=False, markup=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Serve the REST API; this process owns the data dir while it runs."""
    import uvicorn

    from ragsvc.api import create_app
    from ragsvc.logs import configure_logging

    settings = _settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    configure_logging(settings.log_level)
    lock = DataDirLock(Path(settings.data_dir))
    with reported():
        lock.acquire()
    uvicorn.run(
        create_app(settings, lock=lock),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level.lower(),
        loop=settings.server_loop,
        http=settings.server_http,
    )


@collections_app.command("list")
def collections_list(as_json: AsJson = False) -> None:
    """List collections with their model and chunk counts."""
    with reported(), open_backend(_settings()) as backend:
        rows = backend.list_collections()
    if as_json:
        out.print_json(json.dumps([row.model_dump(mode="json") for row in rows]))
        return
    if not rows:
        out.print("no collections")
    for row in rows:
        e = row.embedding
        where = f" at {row.embedding_url}" if row.embedding_url else ""
        out.print(
            f"[bold]{row.name}[/bold]  {row.chunks} chunks  "
            f"{escape(e.provider)}:{escape(e.model)} ({e.dimensions}-d){escape(where)}",
            highlight=False,
        )


@collections_app.command("reindex")
@embedding_options
def collections_reindex(
    name: Annotated[str, typer.Argument()],
    embedding: EmbeddingSpec | None = None,
    keep_old: Annotated[bool, typer.Option(help="keep the old index after the switch")] = False,
    build: Annotated[bool, typer.Option(help="build the HNSW index before the switch")] = True,
    as_json: AsJson = False,
) -> None:
    """Re-embed NAME's stored chunks with another model and switch to it; the old index serves until then."""
    if embedding is None or embedding.model is None:
        fail(UsageError("name the new model with --embedding-model"))
    with reported(), open_backend(_settings()) as backend:
        with ingest_progress_bar(f"reindexing{_where(backend)}", err) as show:
            summary = backend.reindex(name, embedding, keep_old=keep_old, build=build, progress=show)
    if as_json:
        out.print_json(summary.model_dump_json())
        return
    before, after = summary.previous, summary.embedding
    kept = f"; old index {summary.previous_index} kept" if summary.kept_old else ""
    out.print(
        f"[bold]{name}[/bold]: {summary.chunks} chunks re-embedded, {escape(before.model)} "
        f"({before.dimensions}-d) -> {escape(after.model)} ({after.dimensions}-d) "
        f"in {summary.seconds:.1f} s{kept}",
        highlight=False,
    )
    _warn_if_unbuilt(summary.index_build)


@collections_app.command("delete")
def collections_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a collection with all its vectors."""
    with reported(), open_backend(_settings()) as backend:
        backend.delete_collection(name)
    out.print(f"deleted {name}", markup=False)


@documents_app.command("delete")
def documents_delete(
    collection: Annotated[str, typer.Argument()],
    source: Annotated[str, typer.Argument(help="the document's path, as `ragsvc search` cites it")],
) -> None:
    """Delete one document: its chunks, its stored upload and its name in job records. Exits 1 when it
    matched nothing."""
    with reported(), open_backend(_settings()) as backend:
        deleted = backend.delete_document(collection, source)
    upload = ", and its stored upload" if deleted.upload else ""
    out.print(f"deleted {deleted.source} from {collection}: {deleted.chunks} chunks{upload}", markup=False)


@app.command()
def mcp() -> None:
    """Serve the MCP tools on stdin/stdout for an MCP client that starts ragsvc itself (Claude Desktop, an
    editor); this process owns the data dir while it runs. A running `ragsvc serve` offers them at /mcp."""
    import anyio

    from indexes.errors import StoreBusy
    from ragsvc.logs import configure_logging
    from ragsvc.mcp_server import build_mcp
    from ragsvc.owner import running_server
    from ragsvc.service.access import LOCAL
    from ragsvc.service.factory import open_runtime

    settings = _settings()
    configure_logging(settings.log_level)  # to stderr: stdout carries the protocol
    lock = DataDirLock(Path(settings.data_dir))
    with reported():
        if not lock.try_acquire():
            url = running_server(Path(settings.data_dir))
            where = f"; connect the MCP client to {url}/mcp instead" if url else ""
            raise StoreBusy(f"data dir {settings.data_dir} is in use{where}")
        runtime = open_runtime(settings, lock)
    try:
        # The local user of the data dir, as the CLI's inline mode is.
        anyio.run(build_mcp(lambda: runtime, lambda _headers: LOCAL).run_stdio_async)
    finally:
        runtime.close()


@app.command()
def worker(
    workers: Annotated[int, typer.Option(min=1, help="jobs this process runs at once")] = 1,
) -> None:
    """Run ingestion jobs from the shared Redis queue until interrupted.

    Needs RAGSVC_REDIS_URL (the queue and job records) and RAGSVC_QDRANT_URL (a store that every worker can
    write: Qdrant Edge is opened by one process only, so with it the serving process runs the jobs itself).
    """
    settings = _settings()
    if not settings.redis_url or not settings.qdrant_url:
        fail(
            UsageError(
                "ragsvc worker needs RAGSVC_REDIS_URL (the shared job queue) and RAGSVC_QDRANT_URL "
                "(a Qdrant server; the embedded store belongs to `ragsvc serve`)"
            )
        )
    import threading

    from ragsvc.logs import configure_logging
    from ragsvc.service.factory import open_runtime

    configure_logging(settings.log_level)
    with reported():
        runtime = open_runtime(settings, workers=workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.jobs.start()
    err.print(f"worker {runtime.jobs.worker} runs jobs from queue {settings.job_queue!r}", highlight=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        runtime.close()  # lets the jobs in hand finish, then frees the data dir


access_cli.register(app)  # keys, users, groups, prices, usage, audit
