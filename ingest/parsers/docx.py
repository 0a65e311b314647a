"""Word documents (python-docx): Heading styles and outline levels become the section trail; tables become
column-labelled lines."""

from __future__ import annotations

import io
import re
from typing import Any

from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    SectionBuilder,
    clean_text,
    table_lines,
)

_WORD_NS = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx_heading_level(paragraph: Any) -> int | None:
    """Level of a Heading-styled (or outline-levelled) paragraph; 0 for the Title style."""
    outline = paragraph._p.find(f"{_WORD_NS}pPr/{_WORD_NS}outlineLvl")
    if outline is not None and (outline.get(f"{_WORD_NS}val") or "").isdigit():
        level = int(outline.get(f"{_WORD_NS}val"))
        if level < 9:
            return level + 1
    style = paragraph.style
    for _ in range(5):  # a custom style based on "Heading 2" is a heading too
        if style is None:
            return None
        name = (style.name or "").strip()
        if name == "Title":
            return 0
        match = re.fullmatch(r"(?i)heading\s*(\d)", name)
        if match:
            return int(match.group(1))
        style = style.base_style
    return None


def parse_docx(source: str, raw: bytes) -> ParsedDocument:
    """Paragraphs and tables in document order; Heading 1-9 (and Title) styles become the section trail."""
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(raw))
        core_title = clean_text(document.core_properties.title or "")
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors...: all mean corrupt
        raise ExtractionFailed(f"corrupt DOCX: {type(exc).__name__}: {exc}") from exc
    builder = SectionBuilder(core_title or None)
    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(element, document)
            text = clean_text(paragraph.text)
            if not text:
                continue
            level = _docx_heading_level(paragraph)
            if level is not None:
                builder.heading(level, text)
            elif paragraph.style is not None and "list" in (paragraph.style.name or "").lower():
                builder.add(f"- {text}")
            else:
                builder.add(text)
                builder.add("")
        elif tag == "tbl":
            rows = []
            for row in Table(element, document).rows:
                cells, seen = [], set()
                for cell in row.cells:  # a merged cell is repeated once per grid column
                    if id(cell._tc) not in seen:
                        seen.add(id(cell._tc))
                        cells.append(cell.text)
                rows.append(cells)
            builder.extend(table_lines(rows), paragraphs=True)
    return builder.finish(source, "docx")
