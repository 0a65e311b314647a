"""Budgets drawn around every model call a request makes: the caller's request and tokens are admitted before
the embedding model or the LLM runs (OverLimit, a 429, otherwise) and settled to what was used.

The front end that serves the request opens a `BudgetNote` for it (`noting`); each settled call leaves the
caller's remaining limits there, for the `X-RateLimit-*` headers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from ragsvc.access.admission import Meter, metered
from ragsvc.access.usage import Payer
from ragsvc.service.access import Principal
from ragsvc.service.runtime import Runtime


@dataclass
class BudgetNote:
    """What the caller has left after the request's last model call: rate-limit headers and credits."""

    headers: dict[str, str] = field(default_factory=dict)
    remaining_credits: float | None = None


# The note of the request being served. A mutable object, so that a service call on a worker thread (which
# runs in a copy of the request's context) writes into the note the front end reads.
_note: ContextVar[BudgetNote | None] = ContextVar("ragsvc_budget_note", default=None)


@contextmanager
def noting() -> Iterator[BudgetNote]:
    """A note for one request; model calls made inside the block write to it."""
    note = BudgetNote()
    token = _note.set(note)
    try:
        yield note
    finally:
        _note.reset(token)


@dataclass
class Spent:
    """A model call's usage where nothing is metered (no access control in this runtime)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    embedding_tokens: int | None = None


# Called with a model call's input tokens and the most it may write, before the call; the block records the
# usage the model reported on what it yields (input_tokens, output_tokens).
LLMCharge = Callable[[int, int], AbstractContextManager[Meter | Spent]]


@contextmanager
def free(input_tokens: int, output_tokens: int) -> Iterator[Spent]:
    """The charge of a call nobody pays for (the answer pipeline run without a caller: eval, tests)."""
    yield Spent()


def payer_of(caller: Principal) -> Payer:
    return Payer(caller.user, caller.groups, caller.key_id)


@contextmanager
def charged(
    runtime: Runtime,
    caller: Principal,
    collection: str,
    model: str,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    embedding_tokens: int = 0,
    requests: int = 1,
) -> Iterator[Meter | Spent]:
    """Admit one model call of `caller` (OverLimit: the block never runs), then settle it to the usage the
    block records on the meter (the model's report), else to the estimate. `requests` is 1 for the first
    model call of a request and 0 for the ones that follow it, so each request counts once."""
    access = runtime.access
    if access is None:
        yield Spent()
        return
    with metered(
        access.db,
        access.counters,
        payer_of(caller),
        collection=collection,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        embedding_tokens=embedding_tokens,
        requests=requests,
        windows=access.windows,
    ) as meter:
        _write_note(meter)  # a stream's headers go out before its call is settled
        yield meter
    _write_note(meter)


def _write_note(meter: Meter) -> None:
    note = _note.get()
    if note is not None:
        note.headers = dict(meter.admission.headers)
        note.remaining_credits = meter.remaining_credits


def llm_charge(runtime: Runtime, caller: Principal, collection: str, *, requests: int = 0) -> LLMCharge:
    """The answer pipeline's hook: each LLM call, admitted on the LLM's model with the prompt's tokens and
    the most it may write, and settled to the usage the LLM reported."""

    def charge(input_tokens: int, output_tokens: int) -> AbstractContextManager[Meter | Spent]:
        return charged(
            runtime,
            caller,
            collection,
            runtime.settings.llm_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            requests=requests,
        )

    return charge
