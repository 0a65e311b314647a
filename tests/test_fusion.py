"""Hybrid fusion (indexes.fusion): the dense and BM25 lists of a query merged by their scaled scores."""

from __future__ import annotations

import pytest

from indexes.engine import Hit
from indexes.fusion import fuse


def ranked(*scores: tuple[str, float]) -> list[Hit]:
    return [Hit(point, score, {"source": f"{point}.md"}) for point, score in scores]


def ids(hits: list[Hit]) -> list[str]:
    return [hit.id for hit in hits]


# A page the embedding finds far ahead of the rest, in words BM25 does not match (a paraphrase), against pages
# in the middle of both lists. Reciprocal rank fusion put the paraphrase's page 7th of 10 in a case like this
# (vite-06: "open the dev server from my phone" for `server.host`): two middling ranks beat one first rank.
DENSE = ranked(("answer", 0.82), ("b", 0.45), ("c", 0.44), ("d", 0.43), ("top", 0.35), ("e", 0.30))
SPARSE = ranked(("top", 9.0), ("c", 6.0), ("b", 5.8), ("d", 5.5), ("f", 1.0))


def test_a_hit_far_ahead_in_one_list_outranks_hits_midway_in_both() -> None:
    fused = fuse(DENSE, SPARSE, limit=4)
    assert ids(fused) == ["top", "answer", "c", "b"]
    # Each list scaled from 0 to its best's 1, then the halves summed. The dense 0 is its last score (a list
    # cut at the depth asked); BM25's is 0 itself, the list being shorter than asked: it holds every match.
    assert fused[0].score == pytest.approx(0.5 * 0.05 / 0.52 + 0.5)
    assert fused[1].score == pytest.approx(0.5)
    assert fused[2].score == pytest.approx(0.5 * 0.14 / 0.52 + 0.5 * 6 / 9)


def test_a_list_cut_at_the_depth_asked_scales_from_its_last_score() -> None:
    cut = ranked(*((f"s{n}", 30.0 - n) for n in range(20)))  # 20 = branch_limit(5): there may be more
    assert fuse([], cut, limit=5)[4].score == pytest.approx(0.5 * (26 - 11) / (30 - 11))
    # one fewer than asked: that is every chunk BM25 finds, and the rest score 0
    assert fuse([], cut[:19], limit=5)[4].score == pytest.approx(0.5 * 26 / 30)


def test_fusion_reads_the_shape_of_each_list_not_its_model_scale() -> None:
    """A question's 160 best cosines lie between 0.80 and 0.94 with e5, between 0.11 and 0.80 with MiniLM, and
    BM25 has no ceiling: the fused order is the same when a list's scores are squeezed or stretched."""
    squeezed = [Hit(h.id, 0.7 + h.score / 5, h.payload) for h in DENSE]
    stretched = [Hit(h.id, h.score * 40, h.payload) for h in SPARSE]
    assert ids(fuse(squeezed, stretched, limit=6)) == ids(fuse(DENSE, SPARSE, limit=6))


def test_fused_hits_keep_their_payloads_and_the_limit() -> None:
    fused = fuse(DENSE, SPARSE, limit=6)
    assert len(fused) == 6 and {h.id for h in fused} < {"answer", "b", "c", "d", "top", "e", "f"}
    assert all(h.payload == {"source": f"{h.id}.md"} for h in fused)


def test_equal_fused_scores_keep_the_dense_order_first() -> None:
    # the best of each list alone: 0.5 each; the dense one comes first, every time
    assert ids(fuse(ranked(("d1", 0.9), ("d2", 0.1)), ranked(("s1", 5.0), ("s2", 1.0)), limit=2)) == [
        "d1",
        "s1",
    ]


def test_one_empty_list_leaves_the_other_in_its_order() -> None:
    assert ids(fuse(DENSE, [], limit=10)) == ids(DENSE)
    assert ids(fuse([], SPARSE, limit=10)) == ids(SPARSE)
