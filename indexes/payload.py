"""What each stored chunk carries besides its vectors: one typed model that ingestion writes and every reader
(search, citations, document listings, reindex) reads, instead of a dict read by key in each of them."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

# A code fence line as CommonMark reads one ("```yaml", "~~~"; no backtick after a backtick fence), its marker
# as group 1: where a chunk's code starts and ends, for its reader and the LLM, in every format's chunks (the
# parsers write them so). No words to search by: with them embedded, Flux's hybrid hit@5 fell 1.000 -> 0.981.
FENCE_LINE = re.compile(r"^[ \t]*(`{3,}(?=[^`\n]*$)|~{3,})[^\n]*$", re.M)
_FENCE_LINE_AND_END = re.compile(FENCE_LINE.pattern + r"\n?", re.M)


def embed_text(section_trail: list[str], text: str) -> str:
    """What the embedding model and BM25 read of a chunk: its heading trail, then its text without fence lines."""
    return f"{' > '.join(section_trail)}\n\n{_FENCE_LINE_AND_END.sub('', text)}"


class ChunkPayload(BaseModel):
    source: str  # the document's path in its folder, with '/'
    origin: str = ""  # the folder it was ingested from: one collection may hold several
    title: str | None = None
    section: str = ""  # the heading trail as one line: 'Guide > Install'
    section_trail: list[str] = Field(default_factory=list)
    anchor: str = ""
    link: str | None = None  # the rendered section, when the collection has a docs base URL
    position: int = 0  # the chunk's place in its document
    text: str = ""
    tokens: int = 0  # what the model reads of it, heading trail included
    doc_hash: str = ""  # the document version it belongs to
    written_at: float | None = None  # the newest version wins while two coexist (indexes/search.py)
    chunk_hash: str = ""
    file_type: str | None = None

    @classmethod
    def of(cls, payload: dict[str, Any]) -> ChunkPayload:
        """A stored payload as the model."""
        return cls.model_validate(payload)

    @property
    def embed_text(self) -> str:
        return embed_text(self.section_trail, self.text)
