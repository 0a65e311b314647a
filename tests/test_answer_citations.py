"""Citations the answer pipeline adds or keeps: a refusal never points at a source."""

from ingest.embedders import local_embedder
from ragsvc.citations import attribute_citations
from ragsvc.service.retrieval import Source

SOURCES = [
    Source(source="tutorial/cors.md", section="CORS", score=0.9, text="max_age defaults to 600 seconds."),
    Source(source="deployment/docker.md", section="Docker", score=0.5, text="Use the exec form of CMD."),
]


def test_a_refusal_keeps_no_citation_even_when_the_model_wrote_one():
    embedder = local_embedder()
    answer = attribute_citations(
        "The documentation does not cover this. [2]", SOURCES, embedder.embed_documents
    )
    assert answer == "The documentation does not cover this."


def test_an_answer_sentence_left_uncited_is_cited_with_its_closest_source():
    embedder = local_embedder()
    answer = attribute_citations(
        "Browsers cache CORS responses for 600 seconds by default.", SOURCES, embedder.embed_documents
    )
    assert answer == "Browsers cache CORS responses for 600 seconds by default [1]."
