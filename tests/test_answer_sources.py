"""What an answer is written from: the best sections, two of one page when both match, while search results
keep to one chunk a page so that they cover more pages. No LLM is called: the prompt is assembled only."""

from pathlib import Path

from ragsvc.answer import prepare
from ragsvc.service import retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings

# The docs answer it in "Re-ingesting a folder" (the command to run again), whose subsection "Keeping one
# collection per folder" ranks first: with one chunk a page the answer saw only the subsection.
QUESTION = "How do I re-ingest a folder after editing a page?"


def test_an_answer_reads_two_sections_of_one_page_where_search_lists_the_page_once(
    data_dir_with_docs: Path, settings: Settings
):
    assert Settings.model_fields["answer_chunks_per_source"].default == 0
    # The default, which tests/conftest.py sets aside for the tests that answer with SmolLM2.
    runtime = open_runtime(settings.model_copy(update={"answer_chunks_per_source": 0}))
    try:
        found = retrieval.search(runtime, LOCAL, "docs", QUESTION)
        prompt = prepare(runtime, "docs", QUESTION)
    finally:
        runtime.close()
    pages = [s.source for s in found]
    assert len(pages) == len(set(pages))
    sections = [s.section for s in prompt.sources if s.source == "guides/ingesting-documents.md"]
    assert "Ingesting documents > Re-ingesting a folder" in sections, sections
    assert len(sections) >= 2
    assert "ragsvc ingest path/to/docs --collection mydocs" in prompt.messages[-1].content
