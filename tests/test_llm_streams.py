"""A streamed reply the reader stops early (the repetition guard cut it) closes its HTTP response at once, on
the reader's thread. Left to the garbage collector, the openai stream (in a reference cycle with its own
generator) kept its response open until a collection, which once ran inside httpx's connection-pool lock on
the thread of a later LLM call and deadlocked it: an eval run hung on its fifth question."""

from __future__ import annotations

import asyncio
import gc

import openai
import pytest

from ragsvc.llm import AnswerLLM, chat_message
from ragsvc.settings import Settings

LONG_REPLY = [chat_message("user", "Count from one to two hundred in words, one number a line.")]


def _open_streams() -> list[object]:
    # by type, not isinstance: that reads __class__ of every object, and some of torch's warn when read
    streams = (o for o in gc.get_objects() if issubclass(type(o), openai.Stream | openai.AsyncStream))
    return [s for s in streams if not s.response.is_closed]


@pytest.mark.slow
def test_a_reply_stopped_early_closes_its_response_on_the_spot(settings: Settings, running_llm: str):
    llm = AnswerLLM(settings.model_copy(update={"llm_base_url": running_llm}))

    async def read_two_async() -> None:
        deltas = llm.stream(LONG_REPLY)
        await anext(deltas)
        await anext(deltas)
        await deltas.aclose()

    gc.collect()
    gc.disable()  # nothing is closed by a collection: only what the reader's close does counts
    try:
        deltas = llm.stream_chat(LONG_REPLY)
        next(deltas)
        next(deltas)
        deltas.close()
        left_open_sync = _open_streams()
        asyncio.run(read_two_async())
        left_open_async = _open_streams()
    finally:
        gc.enable()
        llm.close()
    assert left_open_sync == [] and left_open_async == []
