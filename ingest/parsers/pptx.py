"""PowerPoint decks (python-pptx): one section per slide, headed by its title, with its speaker notes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    Section,
    clean_text,
    table_lines,
    title_from_path,
)


def _shape_texts(shapes: Any) -> Iterator[str]:
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
            yield from table_lines(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                text = clean_text("".join(run.text for run in paragraph.runs) or "")
                if text:
                    yield text


def parse_pptx(source: str, raw: bytes) -> ParsedDocument:
    """One section per slide, headed by its title and anchored `slide-N`; speaker notes kept."""
    from pptx import Presentation

    try:
        deck = Presentation(io.BytesIO(raw))
        core_title = clean_text(deck.core_properties.title or "")
        slides = list(deck.slides)
    except Exception as exc:  # python-pptx raises KeyError, ValueError, lxml errors...: all mean corrupt
        raise ExtractionFailed(f"corrupt PPTX: {type(exc).__name__}: {exc}") from exc
    sections: list[Section] = []
    title = core_title
    for number, slide in enumerate(slides, 1):
        title_shape = slide.shapes.title
        slide_title = clean_text(title_shape.text_frame.text) if title_shape is not None else ""
        title = title or slide_title
        others = [s for s in slide.shapes if title_shape is None or s.shape_id != title_shape.shape_id]
        lines = list(_shape_texts(others))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = clean_text(slide.notes_slide.notes_text_frame.text)
            if notes:
                lines.append(f"Notes: {notes}")
        if lines:
            sections.append(
                Section([slide_title or f"Slide {number}"], f"slide-{number}", "\n\n".join(lines))
            )
    title = title or title_from_path(source)
    for section in sections:
        if section.trail[0] != title:
            section.trail.insert(0, title)
    return ParsedDocument(source, title, "pptx", sections, {"slides": len(slides)})
