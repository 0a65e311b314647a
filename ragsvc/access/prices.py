"""Prices per model, in credits per token, and what a call costs at them; not who pays (ragsvc.access.usage)
or how much they may spend (ragsvc.access.limits)."""

from __future__ import annotations

from pydantic import BaseModel

from ragsvc.access.db import AccessDB

PICO = 10**12  # credits are counted in millionths of millionths, as integers, so sums are exact


class Price(BaseModel):
    """Credits per token."""

    input: float = 0.0
    output: float = 0.0
    embedding: float = 0.0


def set_price(db: AccessDB, model: str, price: Price) -> None:
    with db.write() as tx:
        tx.execute(
            "INSERT OR REPLACE INTO prices (model, input, output, embedding) VALUES (?, ?, ?, ?)",
            (model, price.input, price.output, price.embedding),
        )


def price_of(db: AccessDB, model: str) -> Price:
    """The model's price; a local model run on a runtime of its own ('NAME#onnx-int8') costs what NAME
    costs unless it has a price of its own."""
    for name in dict.fromkeys((model, model.partition("#")[0])):
        rows = db.read("SELECT input, output, embedding FROM prices WHERE model = ?", (name,))
        if rows:
            return Price(input=rows[0][0], output=rows[0][1], embedding=rows[0][2])
    return Price()


def list_prices(db: AccessDB) -> dict[str, Price]:
    rows = db.read("SELECT model, input, output, embedding FROM prices ORDER BY model")
    return {m: Price(input=i, output=o, embedding=e) for m, i, o, e in rows}


def cost_pico(price: Price, input_tokens: int, output_tokens: int, embedding_tokens: int) -> int:
    return round(
        (input_tokens * price.input + output_tokens * price.output + embedding_tokens * price.embedding)
        * PICO
    )
