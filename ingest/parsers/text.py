"""Plain text: one section under the title its file name gives."""

from __future__ import annotations

from ingest.document import ParsedDocument, Section, title_from_path


def parse_text(source: str, text: str) -> ParsedDocument:
    title = title_from_path(source)
    return ParsedDocument(source, title, "text", [Section([title], "", text.strip())])
