"""The `ragsvc` command line. Commands run inline when no server owns the data dir, else through that server."""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from indexes.errors import RagsvcError, StoreBusy
from ingest.progress import IngestProgress
from ragsvc.cli_progress import ingest_progress_bar
from ragsvc.eval_cli import eval_app
from ragsvc.owner import DataDirLock, running_server
from ragsvc.settings import Settings

app = typer.Typer(
    help="ragsvc: documentation knowledge bases with grounded, cited answers.", no_args_is_help=True
)
collections_app = typer.Typer(help="Manage collections.", no_args_is_help=True)
llm_app = typer.Typer(help="The local LLM (llama.cpp's llama-server).", no_args_is_help=True)
app.add_typer(collections_app, name="collections")
app.add_typer(llm_app, name="llm")
app.add_typer(eval_app, name="eval")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Collection = Annotated[str, typer.Option("--collection", "-c", help="collection name")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
Mode = Annotated[str | None, typer.Option("--mode", help="dense, sparse or hybrid")]
EmbeddingModel = Annotated[
    str | None,
    typer.Option(
        help="full model id: a packaged or local sentence-transformers model, or the endpoint's model"
    ),
]
EmbeddingProvider = Annotated[
    str | None, typer.Option(help="local or openai; openai when --embedding-url is given")
]
EmbeddingUrl = Annotated[
    str | None, typer.Option(help="OpenAI-compatible embeddings endpoint, e.g. http://h:8000/v1")
]
EmbeddingDimensions = Annotated[
    int | None, typer.Option(help="vector size; asked of the endpoint when unset", min=1)
]
QueryPrefix = Annotated[str | None, typer.Option(help="prepended to questions, e.g. 'query: '")]
DocumentPrefix = Annotated[str | None, typer.Option(help="prepended to chunks, e.g. 'passage: '")]
InputType = Annotated[
    bool | None,
    typer.Option("--embedding-input-type/--no-embedding-input-type", help="send input_type query/passage"),
]
EmbeddingMaxTokens = Annotated[
    int | None, typer.Option(help="longest input the endpoint's model reads, in tokens", min=16)
]


# Each embedding spec field's --embedding-* option, in the order `--help` lists them.
EMBEDDING_OPTIONS = {
    "model": EmbeddingModel,
    "provider": EmbeddingProvider,
    "url": EmbeddingUrl,
    "dimensions": EmbeddingDimensions,
    "query_prefix": QueryPrefix,
    "document_prefix": DocumentPrefix,
    "input_type": InputType,
    "max_tokens": EmbeddingMaxTokens,
}


def embedding_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the --embedding-* options in place of its `embedding` parameter, which receives them
    as one embedding spec's fields (None when none was given). Put it under `@app.command()`."""
    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    at = [p.name for p in params].index("embedding")
    options = [
        inspect.Parameter(f"embedding_{field}", params[at].kind, default=None, annotation=option)
        for field, option in EMBEDDING_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_embedding(**given: Any) -> None:
        fields = {field: given.pop(f"embedding_{field}") for field in EMBEDDING_OPTIONS}
        command(**given, embedding=_embedding_spec(fields))

    # typer reads a command's options from its signature: the wrapper's lists the eight, not `embedding`
    shown = signature.replace(parameters=[*params[:at], *options, *params[at + 1 :]])
    with_embedding.__signature__ = shown  # type: ignore[attr-defined]
    return with_embedding


def _embedding_spec(fields: dict[str, Any]) -> dict[str, Any] | None:
    """The --embedding-* options' values as an embedding spec's fields; None when none was given."""
    from pydantic import ValidationError

    from ingest.embed import EmbeddingSpec

    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return None
    try:
        return EmbeddingSpec.model_validate(given).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"--embedding-{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        err.print(f"[red]error:[/red] {problems}", highlight=False)
        raise typer.Exit(2) from None


class RemoteError(RagsvcError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Backend(Protocol):
    def ingest(
        self,
        path: Path,
        collection: str,
        docs_base_url: str | None,
        build: bool,
        embedding: dict[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def reindex(
        self, collection: str, embedding: dict[str, Any], keep_old: bool, build: bool
    ) -> dict[str, Any]: ...

    def search(self, collection: str, question: str, top_k: int | None, mode: str | None) -> list[dict]: ...

    def ask(self, collection: str, question: str, top_k: int | None, mode: str | None) -> dict[str, Any]: ...

    def collections(self) -> list[dict[str, Any]]: ...

    def delete(self, collection: str) -> None: ...


class InlineBackend:
    """This process owns the data dir for the command's duration."""

    def __init__(self, settings: Settings, lock: DataDirLock) -> None:
        from ragsvc.services import open_services

        self.services = open_services(settings, lock)

    def ingest(
        self,
        path: Path,
        collection: str,
        docs_base_url: str | None,
        build: bool,
        embedding: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from ingest.embed import EmbeddingSpec
        from ragsvc.collections import ingest_path

        with ingest_progress_bar("ingesting", err) as show:
            summary = ingest_path(
                self.services,
                collection,
                path,
                docs_base_url=docs_base_url,
                progress=show,
                embedding=EmbeddingSpec.model_validate(embedding) if embedding else None,
            )
            if build:
                show(summary.progress("building index"))
                # Building the HNSW graph holds the GIL; that is fine here, where nothing else is served.
                record = self.services.registry.get(collection)
                self.services.engine.build(record.live_index)
        return summary.model_dump()

    def reindex(
        self, collection: str, embedding: dict[str, Any], keep_old: bool, build: bool
    ) -> dict[str, Any]:
        from ingest.embed import EmbeddingSpec
        from ragsvc.collections import reindex

        with ingest_progress_bar("reindexing", err) as show:
            summary = reindex(
                self.services,
                collection,
                EmbeddingSpec.model_validate(embedding),
                keep_old=keep_old,
                build=build,
                progress=show,
            )
        return summary.model_dump(mode="json")

    def search(self, collection: str, question: str, top_k: int | None, mode: str | None) -> list[dict]:
        from ragsvc.retrieval import retrieve

        return [s.model_dump() for s in retrieve(self.services, collection, question, top_k=top_k, mode=mode)]

    def ask(self, collection: str, question: str, top_k: int | None, mode: str | None) -> dict[str, Any]:
        from ragsvc.answer import answer_question

        return answer_question(self.services, collection, question, top_k=top_k, mode=mode).model_dump()

    def collections(self) -> list[dict[str, Any]]:
        from ragsvc.collections import list_collections

        return [c.model_dump(mode="json") for c in list_collections(self.services)]

    def delete(self, collection: str) -> None:
        from ragsvc.collections import delete_collection

        delete_collection(self.services, collection)

    def close(self) -> None:
        self.services.close()


class RemoteBackend:
    """A running `ragsvc serve` owns the data dir: go through its REST API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=None))

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise StoreBusy(
                f"the ragsvc server that owns this data dir ({self.url}) does not answer: {exc}"
            ) from exc
        if response.status_code >= 400:
            try:
                problem = response.json()["error"]
                raise RemoteError(problem["code"], problem["message"])
            except (ValueError, KeyError, TypeError):
                raise RemoteError("http_error", f"{response.status_code}: {response.text[:200]}") from None
        return response.json() if response.content else None

    def ingest(
        self,
        path: Path,
        collection: str,
        docs_base_url: str | None,
        build: bool,
        embedding: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {
            "path": str(path.expanduser().resolve()),
            "docs_base_url": docs_base_url,
            "embedding": embedding,
        }
        job = self._call("POST", f"/collections/{collection}/ingest", body)
        return self._follow(job, f"ingesting through {self.url}")

    def reindex(
        self, collection: str, embedding: dict[str, Any], keep_old: bool, build: bool
    ) -> dict[str, Any]:
        # The server's reindex job builds the new index itself, in a process of its own.
        body = {"embedding": embedding, "keep_old": keep_old}
        job = self._call("POST", f"/collections/{collection}/reindex", body)
        return self._follow(job, f"reindexing through {self.url}")

    def _follow(self, job: dict[str, Any], label: str) -> dict[str, Any]:
        with ingest_progress_bar(label, err) as show:
            while job["status"] not in ("done", "failed"):
                time.sleep(0.3)
                job = self._call("GET", f"/jobs/{job['id']}")
                show(IngestProgress.model_validate(job["progress"]))
        if job["status"] == "failed":
            code, _, message = job["error"].partition(": ")
            raise RemoteError(code, message or job["error"])
        return job["summary"]

    def search(self, collection: str, question: str, top_k: int | None, mode: str | None) -> list[dict]:
        body = {"question": question, "top_k": top_k, "mode": mode}
        return self._call("POST", f"/collections/{collection}/search", body)["results"]

    def ask(self, collection: str, question: str, top_k: int | None, mode: str | None) -> dict[str, Any]:
        return self._call(
            "POST", f"/collections/{collection}/query", {"question": question, "top_k": top_k, "mode": mode}
        )

    def collections(self) -> list[dict[str, Any]]:
        return self._call("GET", "/collections")

    def delete(self, collection: str) -> None:
        self._call("DELETE", f"/collections/{collection}")

    def close(self) -> None:
        self.http.close()


def _settings() -> Settings:
    return Settings()


@contextmanager
def _backend(settings: Settings):  # noqa: ANN202 - yields a Backend
    """Inline if this process can take the data dir, else through the server that holds it."""
    try:
        lock = DataDirLock(Path(settings.data_dir))
        if lock.try_acquire():
            backend: InlineBackend | RemoteBackend = InlineBackend(settings, lock)
        else:
            url = running_server(Path(settings.data_dir))
            if url is None:
                raise StoreBusy(
                    f"data dir {settings.data_dir} is in use by another ragsvc command; try again when it ends"
                )
            backend = RemoteBackend(url)
        try:
            yield backend
        finally:
            backend.close()
    except RagsvcError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None


@app.command()
@embedding_options
def ingest(
    path: Annotated[Path, typer.Argument(help="folder of Markdown / reStructuredText / text docs")],
    collection: Collection,
    docs_base_url: Annotated[str | None, typer.Option(help="URL of the rendered docs, for links")] = None,
    build: Annotated[bool, typer.Option(help="build the HNSW index afterwards (inline only)")] = True,
    embedding: dict[str, Any] | None = None,
    as_json: AsJson = False,
) -> None:
    """Parse, chunk, embed and store the docs under PATH; unchanged files are skipped.

    A new collection is made on the --embedding-* model (default: the configured one); an existing
    collection keeps its own model (switch it with `ragsvc collections reindex`)."""
    if not path.is_dir():
        err.print(f"[red]error:[/red] {path} is not a folder")
        raise typer.Exit(2)
    with _backend(_settings()) as backend:
        summary = backend.ingest(path, collection, docs_base_url, build, embedding)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(
        f"[bold]{summary['collection']}[/bold]: {summary['files']} files — {len(summary['added'])} added, "
        f"{len(summary['updated'])} updated, {len(summary['unchanged'])} unchanged, "
        f"{len(summary['removed'])} removed, {len(summary['failed'])} failed; "
        f"{summary['chunks_written']} chunks written, {summary['chunks_total']} in the collection "
        f"({summary['seconds']:.1f} s)"
    )
    # File names and reasons (which quote names inside archives) come from the files themselves: escaped,
    # so that '[red]' or '[/x]' in them is shown, not read as markup (an unmatched closing tag would crash).
    for issue in summary["failed"]:
        out.print(
            f"  [red]failed[/red] {escape(issue['source'])}: {escape(issue['reason'])}", highlight=False
        )
    for issue in summary["skipped"]:
        out.print(
            f"  [yellow]skipped[/yellow] {escape(issue['source'])}: {escape(issue['reason'])}",
            highlight=False,
        )
    if summary["failed"]:
        raise typer.Exit(1)


def _public(source: dict[str, Any]) -> dict[str, Any]:
    return {k: source[k] for k in ("source", "section", "score", "text", "link") if k in source}


@app.command()
def search(
    question: Annotated[str, typer.Argument()],
    collection: Collection,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=100)] = None,
    mode: Mode = None,
    as_json: AsJson = False,
) -> None:
    """Retrieve the chunks that best match QUESTION (no LLM)."""
    with _backend(_settings()) as backend:
        results = backend.search(collection, question, top_k, mode)
    if as_json:
        out.print_json(json.dumps([_public(r) for r in results]))
        return
    for rank, r in enumerate(results, 1):
        out.print(
            f"[bold]{rank}. {r['source']}[/bold] — {r['section']}  [dim]({r['score']:.3f})[/dim]",
            highlight=False,
        )
        out.print("   " + " ".join(r["text"].split())[:240], highlight=False)


@app.command()
def ask(
    question: Annotated[str, typer.Argument()],
    collection: Collection,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=50)] = None,
    mode: Mode = None,
    as_json: AsJson = False,
) -> None:
    """Answer QUESTION from the collection's documents, citing them."""
    with _backend(_settings()) as backend:
        answer = backend.ask(collection, question, top_k, mode)
    if as_json:
        out.print_json(
            json.dumps({"answer": answer["answer"], "sources": [_public(s) for s in answer["sources"]]})
        )
        return
    out.print(answer["answer"], highlight=False)
    out.print()
    for i, s in enumerate(answer["sources"], 1):
        out.print(f"[{i}] {s['source']} — {s['section']}", highlight=False, markup=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
) -> None:
    """Serve the REST API; this process owns the data dir while it runs."""
    import uvicorn

    from ragsvc.api import create_app

    settings = _settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    from ragsvc.logs import configure_logging

    configure_logging(settings.log_level)
    lock = DataDirLock(Path(settings.data_dir))
    try:
        lock.acquire()
    except StoreBusy as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    uvicorn.run(
        create_app(settings, lock=lock),
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level.lower(),
    )


@collections_app.command("list")
def collections_list(as_json: AsJson = False) -> None:
    """List collections with their model and chunk counts."""
    with _backend(_settings()) as backend:
        rows = backend.collections()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no collections")
    for row in rows:
        e = row["embedding"]
        where = f" at {row['embedding_url']}" if row.get("embedding_url") else ""
        out.print(
            f"[bold]{row['name']}[/bold]  {row['chunks']} chunks  "
            f"{e['provider']}:{e['model']} ({e['dimensions']}-d){where}",
            highlight=False,
        )


@collections_app.command("reindex")
@embedding_options
def collections_reindex(
    name: Annotated[str, typer.Argument()],
    embedding: dict[str, Any] | None = None,
    keep_old: Annotated[bool, typer.Option(help="keep the old index after the switch")] = False,
    build: Annotated[bool, typer.Option(help="build the HNSW index before the switch (inline only)")] = True,
    as_json: AsJson = False,
) -> None:
    """Re-embed NAME's stored chunks with another model and switch to it; the old index serves until then."""
    if embedding is None or "model" not in embedding:
        err.print("[red]error:[/red] name the new model with --embedding-model", highlight=False)
        raise typer.Exit(2)
    with _backend(_settings()) as backend:
        summary = backend.reindex(name, embedding, keep_old, build)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    before, after = summary["previous"], summary["embedding"]
    kept = f"; old index {summary['previous_index']} kept" if summary["kept_old"] else ""
    out.print(
        f"[bold]{name}[/bold]: {summary['chunks']} chunks re-embedded, {before['model']} "
        f"({before['dimensions']}-d) -> {after['model']} ({after['dimensions']}-d) "
        f"in {summary['seconds']:.1f} s{kept}",
        highlight=False,
    )


@collections_app.command("delete")
def collections_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a collection with all its vectors."""
    with _backend(_settings()) as backend:
        backend.delete(name)
    out.print(f"deleted {name}")


@llm_app.command("serve")
def llm_serve(
    port: Annotated[int, typer.Option(help="port for llama-server")] = 8081,
    host: Annotated[str, typer.Option(help="address for llama-server")] = "127.0.0.1",
    context: Annotated[int, typer.Option("--ctx-size", help="context window in tokens")] = 2048,
) -> None:
    """Run llama.cpp's llama-server with the bundled SmolLM2-135M-Instruct, until interrupted."""
    from ragsvc.llm_server import LocalLLMMissing, start_llama_server, wait_until_ready

    try:
        process = start_llama_server(port, host=host, context=context)
        wait_until_ready(f"http://{host}:{port}/v1", process)
    except LocalLLMMissing as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    out.print(f"llama-server ready at http://{host}:{port}/v1 (model alias 'smollm2')")
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        sys.exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)


@app.command()
def mcp() -> None:
    """Serve the MCP tools on stdin/stdout for an MCP client that starts ragsvc itself (Claude Desktop, an
    editor); this process owns the data dir while it runs. A running `ragsvc serve` offers them at /mcp."""
    import anyio

    from ragsvc.logs import configure_logging
    from ragsvc.mcp_server import build_mcp
    from ragsvc.services import open_services

    settings = _settings()
    configure_logging(settings.log_level)  # to stderr: stdout carries the protocol
    lock = DataDirLock(Path(settings.data_dir))
    if not lock.try_acquire():
        url = running_server(Path(settings.data_dir))
        where = f"; connect the MCP client to {url}/mcp instead" if url else ""
        err.print(f"[red]error:[/red] data dir {settings.data_dir} is in use{where}", highlight=False)
        raise typer.Exit(1)
    try:
        services = open_services(settings, lock)
    except RagsvcError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    try:
        anyio.run(build_mcp(lambda: services).run_stdio_async)
    finally:
        services.close()


@app.command()
def worker(
    workers: Annotated[int, typer.Option(min=1, help="jobs this process runs at once")] = 1,
) -> None:
    """Run ingestion jobs from the shared Redis queue until interrupted.

    Needs RAGSVC_REDIS_URL (the queue and job records) and RAGSVC_QDRANT_URL (a store that every worker can
    write: Qdrant Edge is opened by one process only, so with it the serving process runs the jobs itself).
    """
    import threading

    from ragsvc.collections import open_jobs
    from ragsvc.logs import configure_logging
    from ragsvc.services import open_services

    settings = _settings()
    if not settings.redis_url or not settings.qdrant_url:
        err.print(
            "[red]error:[/red] ragsvc worker needs RAGSVC_REDIS_URL (the shared job queue) and "
            "RAGSVC_QDRANT_URL (a Qdrant server; the embedded store belongs to `ragsvc serve`)",
            highlight=False,
        )
        raise typer.Exit(2)
    configure_logging(settings.log_level)
    try:
        services = open_services(settings)
    except RagsvcError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
    services.jobs = open_jobs(services, workers=workers)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    services.jobs.start()
    err.print(f"worker {services.jobs.worker} runs jobs from queue {settings.job_queue!r}", highlight=False)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        services.close()  # lets the jobs in hand finish, then frees the data dir
