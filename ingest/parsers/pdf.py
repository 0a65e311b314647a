"""PDF through its text layer (pypdf): one section per page, headed by the bookmarks that lead to it;
running headers and footers are dropped."""

from __future__ import annotations

import io
import re
from typing import Any

from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    Section,
    clean_text,
    title_from_path,
)


def parse_pdf(source: str, raw: bytes) -> ParsedDocument:
    """The text layer page by page, each page a section anchored `page=N` (PDF viewers open it there);
    the bookmarks, when the PDF has them, give the heading trail."""
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractionFailed("encrypted PDF: it needs a password")
        pages = list(reader.pages)
        outline = _pdf_outline(reader)
        meta_title = clean_text(str((reader.metadata or {}).get("/Title") or ""))
        texts = [page.extract_text() or "" for page in pages]
    except ExtractionFailed:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ExtractionFailed(f"corrupt PDF: {type(exc).__name__}: {exc}") from exc
    if not any(t.strip() for t in texts):
        raise ExtractionFailed("PDF without a text layer (scanned pages?): OCR is not supported")
    meta_title = re.sub(r"^Microsoft (Word|PowerPoint) - ", "", meta_title)
    title = meta_title if meta_title and meta_title.lower() not in ("untitled", "title") else ""
    if not title:
        first_line = next((clean_text(line) for line in texts[0].splitlines() if line.strip()), "")
        title = first_line if 0 < len(first_line) <= 120 else title_from_path(source)

    running = _running_lines(texts)
    sections: list[Section] = []
    trail: list[tuple[int, str]] = []
    by_page: dict[int, list[tuple[int, str]]] = {}
    for page, level, heading in outline:
        by_page.setdefault(page, []).append((level, heading))

    def enter(level: int, heading: str) -> None:
        while trail and trail[-1][0] >= level:
            trail.pop()
        trail.append((level, heading))

    def add(lines: list[str], anchor: str) -> None:
        body = "\n".join(lines).strip()
        if body:
            headings = [heading for _, heading in trail if heading != title]
            sections.append(Section([title, *headings], anchor, body))

    for number, text in enumerate(texts):
        lines = [
            line.rstrip()
            for line in text.splitlines()
            if _page_furniture_key(line) not in running or not line.strip()
        ]
        anchor = f"page={number + 1}"
        # A bookmark whose title is a line of the page starts a section at that line; one not found there
        # (drawn as an image, or worded otherwise) starts at the top of the page.
        start = 0
        for level, heading in by_page.get(number, []):
            at = next((i for i in range(start, len(lines)) if _is_heading_line(lines[i], heading)), None)
            if at is None:
                enter(level, heading)
                continue
            add(lines[start:at], anchor)
            enter(level, heading)
            start = at + 1
        add(lines[start:], anchor)
    return ParsedDocument(source, title, "pdf", sections, {"pages": len(pages)})


def _page_furniture_key(line: str) -> str:
    return re.sub(r"\d+", "#", clean_text(line)).lower()


def _running_lines(texts: list[str]) -> set[str]:
    """Running headers and footers: a first or last line (page numbers aside) repeated on most pages."""
    counts: dict[str, int] = {}
    for text in texts:
        lines = [line for line in text.splitlines() if line.strip()]
        for line in {*lines[:2], *lines[-2:]}:
            key = _page_furniture_key(line)
            counts[key] = counts.get(key, 0) + 1
    if len(texts) < 3:
        return set()
    return {
        key for key, count in counts.items() if count >= max(3, len(texts) // 2) and key not in ("", "#")
    } | {
        "#"  # a bare page number
    }


def _is_heading_line(line: str, heading: str) -> bool:
    """Whether a line of page text is the bookmark's heading, allowing for a section number before it."""
    words, target = clean_text(line).lower(), clean_text(heading).lower()
    return bool(target) and (words == target or (words.endswith(target) and len(words) - len(target) <= 12))


def _pdf_outline(reader: Any) -> list[tuple[int, int, str]]:
    """(page index, level, title) of every bookmark that points at a page."""
    entries: list[tuple[int, int, str]] = []

    def visit(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                visit(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a bookmark to nowhere: the text is still read, only the trail is lost
                continue
            title = clean_text(str(getattr(item, "title", "") or ""))
            if page is not None and page >= 0 and title and len(entries) < 10_000:
                entries.append((page, level, title))

    try:
        visit(reader.outline, 1)
    except Exception:  # a broken outline only costs the heading trail
        return []
    return entries
