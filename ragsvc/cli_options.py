"""Options that several `ragsvc` commands share: the collection, --json, the search mode, and the eight
--embedding-* options that make one embedding spec."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from ingest.embed import EmbeddingSpec
from ragsvc.cli_errors import UsageError, fail

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
    as one EmbeddingSpec (None when none was given). Put it under `@app.command()`."""
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


def _embedding_spec(fields: dict[str, Any]) -> EmbeddingSpec | None:
    """The --embedding-* options' values as an embedding spec; None when none was given."""
    given = {k: v for k, v in fields.items() if v is not None}
    if not given:
        return None
    try:
        return EmbeddingSpec.model_validate(given)
    except ValidationError as exc:
        fail(UsageError("; ".join(f"--embedding-{e['loc'][0]}: {e['msg']}" for e in exc.errors())))
