"""The README's example questions about ragsvc's own docs, with what a correct answer says and the page it
cites: the bar the demo's default LLM must pass (tests/test_demo_answers.py, bench/demo_answers.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from eval.metrics import cited_numbers


@dataclass(frozen=True)
class ReadmeQuestion:
    question: str
    pages: frozenset[str]  # a correct answer cites one of these
    says: tuple[str, ...]  # patterns a correct answer matches, every one (case-insensitive)

    def correct(self, answer: str) -> bool:
        return all(re.search(pattern, answer, re.IGNORECASE) for pattern in self.says)

    def cites_right_page(self, answer: str, sources: Sequence[str]) -> bool:
        """One of the answer's [n] markers cites one of the right pages."""
        return any(1 <= n <= len(sources) and sources[n - 1] in self.pages for n in cited_numbers(answer))


README_QUESTIONS = (
    ReadmeQuestion(
        "How do I delete a collection?",
        frozenset({"guides/collections.md", "reference/cli.rst", "reference/rest-api.md"}),
        (r"collections delete|DELETE\s+\S*/collections/",),
    ),
    ReadmeQuestion(
        "How do I re-ingest a folder after editing a page?",
        frozenset({"guides/ingesting-documents.md", "getting-started/quickstart.rst", "reference/cli.rst"}),
        # run the same (ingest) command again: `ragsvc ingest FOLDER --collection NAME`, or the REST ingest route
        (
            r"ragsvc ingest\b|/ingest\b|same (\w+ )?command",
            r"again|same (\w+ )?command|re-?run|re-?ingest|changed",
        ),
    ),
    ReadmeQuestion(
        "Which embedding model does ragsvc use by default?",
        frozenset(
            {
                "concepts/embedding-models.md",
                "reference/configuration.rst",
                "concepts/architecture.md",
                "getting-started/install.md",  # "ragsvc's default embedding model, ..."
            }
        ),
        (r"all-MiniLM-L6-v2|MiniLM",),
    ),
)
