"""Question sets: JSONL lines with a question, its gold source paths, and optionally an answer."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field


class Question(BaseModel):
    question: str
    sources: list[str] = Field(default_factory=list)
    answer: str = ""
    must_contain: list[str] = Field(default_factory=list)
    kind: str = "factual"

    @property
    def answerable(self) -> bool:
        return bool(self.sources)


def load_questions(path: Path) -> list[Question]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [Question.model_validate(json.loads(line)) for line in lines]
