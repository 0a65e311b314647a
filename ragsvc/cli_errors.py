"""The one place where ragsvc errors become CLI output: `error: <message>` (and a hint) on stderr, and an exit
status by error code. 1: the operation failed; 2: the command was given something it cannot use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from indexes.errors import RagsvcError

FAILED = 1
USAGE = 2


class UsageError(RagsvcError):
    """Options or arguments the command cannot use (checked by the CLI itself, before any work)."""

    code = "usage_error"


# code -> (exit status, hint shown after the message). Codes not listed exit with FAILED and no hint.
CLI_ERRORS: dict[str, tuple[int, str | None]] = {
    "usage_error": (USAGE, None),
    "invalid_request": (USAGE, None),
    "invalid_collection_name": (USAGE, None),
    "store_busy": (FAILED, None),
    "llm_unavailable": (FAILED, "start one with `ragsvc llm serve`, or point RAGSVC_LLM_BASE_URL at yours"),
    "local_llm_missing": (FAILED, None),
}

err = Console(stderr=True, soft_wrap=True)


def fail(error: RagsvcError) -> NoReturn:
    status, hint = CLI_ERRORS.get(error.code, (FAILED, None))
    # Messages quote file names and model ids: escaped, so that '[red]' or '[/x]' in them is shown as it is.
    err.print(f"[red]error:[/red] {escape(error.message)}", highlight=False)
    if hint:
        err.print(f"  {hint}", highlight=False, markup=False)
    raise typer.Exit(status)


@contextmanager
def reported() -> Iterator[None]:
    """Run the block; a ragsvc error in it ends the command with its message and exit status."""
    try:
        yield
    except RagsvcError as exc:
        fail(exc)
