"""Question sets: JSONL lines with a question, its gold source paths, and optionally an answer.

An empty `sources` marks a question the documents cannot answer. `id` and graded `relevance` are optional;
BEIR sets (eval.beir) fill both.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field


class Question(BaseModel):
    question: str
    sources: list[str] = Field(default_factory=list)
    answer: str = ""
    must_contain: list[str] = Field(default_factory=list)
    kind: str = "factual"
    id: str | None = None
    relevance: dict[str, int] = Field(default_factory=dict)

    @property
    def answerable(self) -> bool:
        return bool(self.sources)

    @property
    def key(self) -> str:
        """Stable across reorderings of the file: the given id, else a hash of the question."""
        return self.id or "q-" + hashlib.sha1(self.question.encode()).hexdigest()[:10]

    @property
    def grades(self) -> dict[str, int]:
        return {source: self.relevance.get(source, 1) for source in self.sources}


def load_questions(path: Path) -> list[Question]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [Question.model_validate(json.loads(line)) for line in lines]


def fingerprint(questions: list[Question]) -> str:
    """Changes whenever any question, gold source or gold answer changes."""
    text = "\n".join(q.model_dump_json() for q in questions)
    return hashlib.sha1(text.encode()).hexdigest()[:16]
