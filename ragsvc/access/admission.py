"""Rate limits and budgets drawn around a model call: requests and tokens per minute and credits per UTC day,
per user within their group, and optionally per key and per user in one collection. The limits, prices and
usage record themselves live in ragsvc.access.limits, .prices and .usage.

`admit` is called before the LLM or the embedding model runs: it draws the request and its estimated cost
(input counted by ragsvc, output at the most the LLM may write) on every counter at once, or refuses with
the seconds until the window that refused it ends. `settle` then corrects the draw to what the model
reported and records the usage.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from indexes.errors import RagsvcError
from ragsvc.access.counters import DAY, MINUTE, Counters, Draw, seconds_left
from ragsvc.access.db import AccessDB
from ragsvc.access.limits import Limits, get_limits, group_limits
from ragsvc.access.prices import PICO, Price, cost_pico, price_of
from ragsvc.access.usage import Payer, record_usage


class OverLimit(RagsvcError):
    """A limit or the daily budget would be passed: 429, with the seconds to wait."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        retry_after: int,
        headers: dict[str, str],
        code: str,
        remaining_credits: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers | {"Retry-After": str(retry_after)}
        self.code = code
        self.remaining_credits = remaining_credits

    def details(self) -> dict[str, object]:
        """What the error body carries beside code and message: when to retry and what budget is left."""
        return {"retry_after": self.retry_after, "remaining_credits": self.remaining_credits}


@dataclass(frozen=True)
class Windows:
    """The lengths of the rate window (RPM, TPM) and of the budget window (credits), in seconds: a minute
    and a UTC day, shorter only where a test must see a window end."""

    rate: int = MINUTE
    budget: int = DAY


@dataclass
class Admission:
    payer: Payer
    collection: str
    model: str
    price: Price
    estimate: tuple[int, int, int]  # input, output, embedding tokens drawn
    draws: list[Draw] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    remaining_credits: float | None = None
    requests: int = 1
    shown: dict[str, tuple[Draw, ...]] = field(default_factory=dict)


def _draws(
    db: AccessDB, payer: Payer, collection: str, tokens: int, cost: int, requests: int, windows: Windows
) -> tuple[list[Draw], dict[str, tuple[Draw, ...]]]:
    """Every counter the request draws on; and, by kind, the user's own (for the headers)."""
    scopes: list[tuple[str, Limits]] = [(f"|user={payer.user}|", group_limits(db, payer.groups))]
    if payer.key_id and (limits := get_limits(db, "key", payer.key_id)):
        scopes.append((f"|key={payer.key_id}|", limits))
    if collection and (limits := get_limits(db, "collection", collection)):
        scopes.append((f"|user={payer.user}|collection={collection}|", limits))
    draws: list[Draw] = []
    shown: dict[str, tuple[Draw, ...]] = {}
    for number, (scope, limits) in enumerate(scopes):
        credits = None if limits.daily_credits is None else round(limits.daily_credits * PICO)
        kinds = {
            "requests": Draw(f"rpm{scope}", windows.rate, requests, limits.rpm),
            "tokens": Draw(f"tpm{scope}", windows.rate, tokens, limits.tpm),
            "credits": Draw(f"credits{scope}", windows.budget, cost, credits),
        }
        draws.extend(kinds.values())
        if number == 0:
            shown = {k: (d,) for k, d in kinds.items()}
    return draws, shown


def admit(
    db: AccessDB,
    counters: Counters,
    payer: Payer,
    *,
    collection: str,
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    embedding_tokens: int = 0,
    requests: int = 1,
    windows: Windows = Windows(),
) -> Admission:
    """Draw `requests` (one, or none for a further model call of a request already admitted) and the
    estimated tokens and credits, or raise OverLimit (nothing drawn then)."""
    price = price_of(db, model)
    tokens = input_tokens + output_tokens + embedding_tokens
    cost = cost_pico(price, input_tokens, output_tokens, embedding_tokens)
    draws, shown = _draws(db, payer, collection, tokens, cost, requests, windows)
    now = time.time()
    refusal = counters.take(draws, now)
    if refusal is not None:
        kind = refusal.draw.bucket.split("|", 1)[0]
        scope = refusal.draw.bucket.split("|", 1)[1].strip("|").replace("=", " ").replace("|", ", ")
        headers = _headers(counters, shown, now)
        if refusal.draw.limit is not None and refusal.draw.amount > refusal.draw.limit:
            detail = "this request alone is larger than the limit; ask for fewer tokens"
        else:
            detail = f"try again in {refusal.retry_after} s"
        name = {"rpm": "requests per minute", "tpm": "tokens per minute", "credits": "daily credit budget"}[
            kind
        ]
        code = "budget_exhausted" if kind == "credits" else "rate_limited"
        left = _remaining_credits(counters, shown, now)
        raise OverLimit(
            f"{name} limit reached for {scope}; {detail}", refusal.retry_after, headers, code, left
        )
    admission = Admission(
        payer,
        collection,
        model,
        price,
        (input_tokens, output_tokens, embedding_tokens),
        draws,
        requests=requests,
        shown=shown,
    )
    admission.headers = _headers(counters, shown, now)
    admission.remaining_credits = _remaining_credits(counters, shown, now)
    return admission


def _remaining_credits(counters: Counters, shown: dict[str, tuple[Draw, ...]], now: float) -> float | None:
    """The user's credits left in the budget window; None when their group sets no budget."""
    (credits,) = shown["credits"]
    if credits.limit is None:
        return None
    return max(0, credits.limit - counters.used([credits], now)[0]) / PICO


def _headers(counters: Counters, shown: dict[str, tuple[Draw, ...]], now: float) -> dict[str, str]:
    headers = {}
    for kind, (draw,) in shown.items():
        if draw.limit is None:
            continue
        name = kind.capitalize()
        used = counters.used([draw], now)[0]
        limit: float = draw.limit / PICO if kind == "credits" else draw.limit
        left: float = max(0, draw.limit - used) / PICO if kind == "credits" else max(0, draw.limit - used)
        headers[f"X-RateLimit-Limit-{name}"] = f"{limit:g}"
        headers[f"X-RateLimit-Remaining-{name}"] = f"{left:g}"
        headers[f"X-RateLimit-Reset-{name}"] = f"{seconds_left(draw.period, now)}s"
    return headers


def settle(
    db: AccessDB,
    counters: Counters,
    admission: Admission,
    *,
    input_tokens: int,
    output_tokens: int,
    embedding_tokens: int = 0,
) -> int:
    """Correct the draw to the tokens really used and record the usage; returns the credits charged (pico)."""
    estimate_in, estimate_out, estimate_emb = admission.estimate
    tokens = (input_tokens + output_tokens + embedding_tokens) - (estimate_in + estimate_out + estimate_emb)
    charged = cost_pico(admission.price, input_tokens, output_tokens, embedding_tokens)
    cost = charged - cost_pico(admission.price, estimate_in, estimate_out, estimate_emb)
    corrections = []
    for draw in admission.draws:
        kind = draw.bucket.split("|", 1)[0]
        amount = {"tpm": tokens, "credits": cost}.get(kind, 0)
        if amount:
            corrections.append(Draw(draw.bucket, draw.period, amount))
    counters.add(corrections)
    if admission.shown:  # what the caller is told is what is left after this call, as charged
        now = time.time()
        admission.headers = _headers(counters, admission.shown, now)
        admission.remaining_credits = _remaining_credits(counters, admission.shown, now)
    record_usage(
        db,
        admission.payer,
        admission.collection,
        admission.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        embedding_tokens=embedding_tokens,
        credits=charged,
        requests=admission.requests,
    )
    return charged


@dataclass
class Meter:
    """What a metered call used, filled in by the caller from the model's reported usage."""

    admission: Admission
    input_tokens: int | None = None
    output_tokens: int | None = None
    embedding_tokens: int | None = None
    charged_pico: int = 0

    @property
    def remaining_credits(self) -> float | None:
        """Credits left in the budget window: after the estimate while the call runs, exact once settled."""
        return self.admission.remaining_credits


@contextmanager
def metered(
    db: AccessDB,
    counters: Counters,
    payer: Payer,
    *,
    collection: str,
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    embedding_tokens: int = 0,
    requests: int = 1,
    windows: Windows = Windows(),
) -> Iterator[Meter]:
    """Admit the call before it runs (OverLimit, and the model is never called), then settle it to what the
    caller recorded on the meter: the model's reported usage, else the estimate. A call that fails before
    the model answered is charged its request and what it embedded, not the tokens it never got."""
    admission = admit(
        db,
        counters,
        payer,
        collection=collection,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        embedding_tokens=embedding_tokens,
        requests=requests,
        windows=windows,
    )
    meter = Meter(admission)
    failed = False
    try:
        yield meter
    except BaseException:
        failed = True
        raise
    finally:
        used_in = meter.input_tokens if meter.input_tokens is not None else (0 if failed else input_tokens)
        used_out = (
            meter.output_tokens if meter.output_tokens is not None else (0 if failed else output_tokens)
        )
        used_emb = meter.embedding_tokens if meter.embedding_tokens is not None else embedding_tokens
        meter.charged_pico = settle(
            db, counters, admission, input_tokens=used_in, output_tokens=used_out, embedding_tokens=used_emb
        )
