"""The repetition guard: a reply that starts repeating itself is cut between sentences, the same way whether it
arrives whole or token by token; answers that merely look alike in places are left whole."""

from __future__ import annotations

import re

import pytest

from ragsvc.answer_guard import RepetitionGuard, guarded

# SmolLM2-135M's replies to the README's questions before the guard (issue 18), and the text each must become.
LOOPING = [
    (
        "The documentation is designed to help you create and manage your own documents. The documentation is "
        "designed to help you create and manage your own documents. The documentation is designed to help you "
        "create and manage your own documents. The documentation is designed",
        "The documentation is designed to help you create and manage your own documents.",
    ),
    (
        "It provides a way to create a document that can be edited. It provides a way to edit a document that "
        "can be edited. It provides a way to create",
        "It provides a way to create a document that can be edited.",
    ),
    # in other words: the fourth sentence opens as the second did and says little else (to "Which embedding
    # model does ragsvc use by default?", 2026-12-03)
    (
        "The embedding model used by ragsvc depends on the embedding-models package in the ragsvc process, which "
        "is a collection of all models that are built with the embedding-model package [1]. The embedding-models "
        "package contains multiple embedding-models and each one has its own embedding-models package. This "
        "means that every single collection created within this repository will have its own embedding-models "
        "package installed as well [2]. The embedding-models package contains multiple embedding-models "
        "packages, each one containing its own embedding-models package installed as well. This allows you",
        "The embedding model used by ragsvc depends on the embedding-models package in the ragsvc process, which "
        "is a collection of all models that are built with the embedding-model package [1]. The embedding-models "
        "package contains multiple embedding-models and each one has its own embedding-models package. This "
        "means that every single collection created within this repository will have its own embedding-models "
        "package installed as well [2].",
    ),
    (
        "1. The documentation is not available. 2. The documentation is not available. 3. The documentation is "
        "not available.",
        "1. The documentation is not available.",
    ),
    (
        "Use the ingest command [1]. You can re-ingest the folder with the same collection and the same "
        "collection and the same collection and the same",
        # a phrase looping inside a sentence: cut after its first turn
        "Use the ingest command [1]. You can re-ingest the folder with the same collection and",
    ),
    (
        "- Step one: ingest the folder.\n- Step two: ask.\n- Step two: ask.\n",
        "- Step one: ingest the folder.\n- Step two: ask.",
    ),
]
WHOLE = [
    "To delete a collection, run `ragsvc collections delete NAME` [1]. Over HTTP, send `DELETE "
    "/collections/NAME` [2]. Deleting removes the collection's index and all of its chunks and file hashes from "
    "the data directory [1]. The source folder is not touched; ingest the folder again to recreate it [1].",
    "Run `ragsvc collections delete NAME` [1]. It removes the index and the stored chunks [1].",
    "To delete a collection, run `ragsvc collections delete NAME` [1]. To delete a document, use "
    "`ragsvc documents delete` [2].",
    "Yes. Yes. Yes. The default model is all-MiniLM-L6-v2 [1].",
    "Run these [1]:\n```\nragsvc ingest docs --collection a\nragsvc ingest docs --collection b\n```\nThen ask [1].",
    "Version 1.5 of the model. Version 2.0 of the index is the one in use, and it is the one to use [2].",
]


def _streamed(reply: str, pieces: list[str]) -> tuple[str, bool]:
    guard = RepetitionGuard()
    shown = "".join(guard.feed(p) for p in pieces) + guard.close()
    assert shown == guard.text
    return shown.rstrip(), guard.stopped


def _tokens(reply: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+", reply)


@pytest.mark.parametrize(("reply", "kept"), LOOPING)
def test_a_reply_that_repeats_itself_is_cut_before_the_repeat(reply: str, kept: str):
    assert guarded(reply) == (kept, True)


@pytest.mark.parametrize(("reply", "kept"), LOOPING)
def test_a_streamed_reply_is_cut_at_the_same_place_and_never_shows_the_repeat(reply: str, kept: str):
    # Token by token (as llama-server streams) and character by character: the same cut.
    assert _streamed(reply, _tokens(reply)) == (kept, True)
    assert _streamed(reply, list(reply)) == (kept, True)


@pytest.mark.parametrize("reply", WHOLE)
def test_answers_that_do_not_repeat_themselves_are_left_whole(reply: str):
    assert guarded(reply) == (reply.rstrip(), False)
    assert _streamed(reply, _tokens(reply)) == (reply.rstrip(), False)


def test_a_sentence_is_shown_word_by_word_unless_it_opens_like_an_earlier_one():
    guard = RepetitionGuard()
    shown = [guard.feed(t) for t in _tokens("Ingest the folder again with the same command [1]. Ingest the")]
    # The first sentence streams as it comes (from its third word on, each word once the next begins)...
    assert "".join(shown[:4]) == "Ingest the folder"
    # ...the second opens as the first did: held back until it ends, so a repeat is never half shown.
    assert guard.text == "Ingest the folder again with the same command [1]. "
    assert guard.feed(" folder again with the same command [1]. ") == ""
    assert guard.stopped
