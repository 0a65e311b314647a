"""Usage kept per UTC day, user, group, key, collection and model: recorded after each model call, summed for
reports. Nothing here limits or refuses a call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from indexes.errors import InvalidRequest
from ragsvc.access.db import AccessDB
from ragsvc.access.prices import PICO

USAGE_DIMENSIONS = ("day", "user", "group", "key", "collection", "model")


@dataclass(frozen=True)
class Payer:
    """Who a request is charged to."""

    user: str
    groups: tuple[str, ...] = ()
    key_id: str | None = None


def record_usage(
    db: AccessDB,
    payer: Payer,
    collection: str,
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    embedding_tokens: int,
    credits: int,
    requests: int = 1,
) -> None:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    group = payer.groups[0] if payer.groups else ""
    with db.write() as tx:
        tx.execute(
            "INSERT INTO usage (day, user, grp, key_id, collection, model, requests, input_tokens,"
            " output_tokens, embedding_tokens, credits_pico) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (day, user, grp, key_id, collection, model) DO UPDATE SET"
            " requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens,"
            " output_tokens = output_tokens + excluded.output_tokens,"
            " embedding_tokens = embedding_tokens + excluded.embedding_tokens,"
            " credits_pico = credits_pico + excluded.credits_pico",
            (
                day,
                payer.user,
                group,
                payer.key_id or "",
                collection,
                model,
                requests,
                input_tokens,
                output_tokens,
                embedding_tokens,
                credits,
            ),
        )


class UsageRow(BaseModel):
    day: str | None = None
    user: str | None = None
    group: str | None = None
    key: str | None = None
    collection: str | None = None
    model: str | None = None
    requests: int
    input_tokens: int
    output_tokens: int
    embedding_tokens: int
    credits: float


_COLUMN = {
    "day": "day",
    "user": "user",
    "group": "grp",
    "key": "key_id",
    "collection": "collection",
    "model": "model",
}


def usage_report(
    db: AccessDB,
    by: list[str],
    *,
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> list[UsageRow]:
    """Usage summed per the dimensions in `by` (day, user, group, key, collection, model); days are
    YYYY-MM-DD in UTC, both ends included."""
    unknown = [d for d in by if d not in _COLUMN]
    if unknown:
        raise InvalidRequest(f"cannot group usage by {', '.join(unknown)}: use {', '.join(USAGE_DIMENSIONS)}")
    where, args = ["1=1"], []
    for column, op, value in (("user", "=", user), ("day", ">=", since), ("day", "<=", until)):
        if value is not None:
            where.append(f"{column} {op} ?")
            args.append(value)
    columns = [_COLUMN[d] for d in by]
    select = ", ".join(
        columns
        + [
            "SUM(requests)",
            "SUM(input_tokens)",
            "SUM(output_tokens)",
            "SUM(embedding_tokens)",
            "SUM(credits_pico)",
        ]
    )
    group = f" GROUP BY {', '.join(columns)} ORDER BY {', '.join(columns)}" if columns else ""
    rows = db.read(f"SELECT {select} FROM usage WHERE {' AND '.join(where)}{group}", args)
    report = []
    for row in rows:
        if row[len(by)] is None:  # no usage at all: SUM over nothing
            continue
        named = dict(zip(by, row[: len(by)], strict=True))
        requests, inp, out, emb, credits = row[len(by) :]
        report.append(
            UsageRow(
                **named,
                requests=requests,
                input_tokens=inp,
                output_tokens=out,
                embedding_tokens=emb,
                credits=credits / PICO,
            )
        )
    return report
