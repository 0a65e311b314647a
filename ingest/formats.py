"""Parsers for the formats that need a library: HTML (lxml), PDF (pypdf), DOCX (python-docx), PPTX
(python-pptx), ODT (lxml), e-mail (the standard library) and CSV, each into headed sections.

Headings become the section trail wherever the format records them (h1-h6, Heading styles, outline levels,
slide titles, PDF bookmarks). Nothing here opens a file or writes one: e-mail attachments stay in memory.
`unstructured` is not used for these formats: it flattens heading levels, and for them it wraps the same
libraries used here directly. It reads only what ragsvc has no parser for (ingest/longtail.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from ingest.extract import ExtractionFailed, decode_text
from ingest.parse import ParsedDocument, Section, SectionBuilder, labelled_rows, title_from_path

_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def table_lines(rows: list[list[str]]) -> list[str]:
    """A table as "column: value; ..." lines, its first row taken as the header."""
    rows = [[clean_text(cell) for cell in row] for row in rows]
    rows = [row for row in rows if any(row)]
    if not rows:
        return []
    if len(rows) == 1:
        return ["; ".join(c for c in rows[0] if c)]
    return labelled_rows(rows[0], rows[1:])


# ---------------------------------------------------------------------------------------------------
# HTML

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Page furniture and machinery: dropped with everything inside.
_NOISE = (
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "aside",
    "form",
    "button",
    "iframe",
    "svg",
    "canvas",
    "select",
    "object",
    "embed",
    "dialog",
)
_NOISE_XPATH = " | ".join(
    [f"//{tag}" for tag in _NOISE]
    + [
        "//*[@hidden]",
        "//*[@aria-hidden='true']",
        "//*[@role='navigation' or @role='search' or @role='banner' or @role='contentinfo']",
        "//*[contains(concat(' ', normalize-space(@class), ' '), ' headerlink ')]",
    ]
)
_BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "blockquote",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "li",
    "figure",
    "figcaption",
    "details",
    "summary",
    "address",
    "hr",
    "center",
    "body",
}
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w-]+)""", re.I)
_TITLE_SEPARATORS = re.compile(r"\s+[—–|·-]\s+")


def _html_text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    declared = _META_CHARSET.search(raw[:4096])
    if declared:
        try:
            return raw.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return decode_text(raw)[0]


def parse_html(source: str, raw: bytes | str, file_type: str = "html") -> ParsedDocument:
    """Headings h1-h6 as sections (anchored by their id, as Sphinx and MkDocs write it); navigation,
    scripts, styles and hidden parts dropped; tables as labelled rows; code blocks kept line by line."""
    from lxml import etree
    from lxml import html as lxml_html

    text = _XML_DECLARATION.sub("", _html_text(raw))
    if not text.strip():
        return ParsedDocument(source, title_from_path(source), file_type, [])
    parser = lxml_html.HTMLParser(remove_comments=True, remove_pis=True, no_network=True)
    try:
        page = lxml_html.document_fromstring(text, parser=parser)
    except (etree.ParserError, ValueError) as exc:
        raise ExtractionFailed(f"not an HTML page: {exc}") from exc

    page_title = clean_text(page.findtext(".//title") or "")
    page_title = _TITLE_SEPARATORS.split(page_title)[0] if page_title else ""
    for element in page.xpath(_NOISE_XPATH):
        if element.getparent() is not None:
            element.drop_tree()
    roots = (
        page.xpath("//main | //*[@role='main']") or page.xpath("//article") or page.xpath("//body") or [page]
    )
    root = roots[0]
    if root.tag == "body":
        # Site chrome outside the article: a header or footer that is not inside an article or main.
        for element in root.xpath(".//header[not(ancestor::article)] | .//footer[not(ancestor::article)]"):
            if element.getparent() is not None:
                element.drop_tree()
    has_h1 = bool(root.xpath(".//h1"))
    builder = SectionBuilder(None if has_h1 or not page_title else page_title)
    _walk_html(root, builder)
    return builder.finish(source, file_type)


def _heading_anchor(heading: Any) -> str | None:
    if heading.get("id"):
        return heading.get("id")
    for link in heading.xpath(".//a[@href]"):
        if link.get("href", "").startswith("#") and len(link.get("href")) > 1:
            return link.get("href")[1:]
    parent = heading.getparent()
    if parent is not None and parent.tag == "section" and parent.get("id"):
        return parent.get("id")  # Sphinx puts the id on the section around the heading
    return None


def _own_rows(table: Any) -> Iterator[Any]:
    """The rows of this table, not of a table nested inside it."""
    for row in table.iter("tr"):
        owner = row.getparent()
        while owner is not None and owner.tag != "table":
            owner = owner.getparent()
        if owner is table:
            yield row


def _walk_html(root: Any, builder: SectionBuilder) -> None:
    from lxml import etree

    inline: list[str] = []

    def flush() -> None:
        line = clean_text("".join(inline))
        inline.clear()
        if line and line != "-":
            builder.add(line)
            builder.add("")

    skipping = 0  # depth inside an element already taken whole (heading, table, pre)
    for event, element in etree.iterwalk(root, events=("start", "end")):
        tag = element.tag.lower() if isinstance(element.tag, str) else ""
        if event == "start":
            if skipping:
                skipping += 1
                continue
            if tag in _HEADINGS:
                flush()
                title = clean_text(element.text_content())
                if title:
                    builder.heading(_HEADINGS[tag], title, _heading_anchor(element))
                skipping = 1
            elif tag == "pre":
                flush()
                for line in element.text_content().splitlines():
                    builder.add(line.rstrip())
                builder.add("")
                skipping = 1
            elif tag == "table":
                flush()
                rows = [
                    [cell.text_content() for cell in row.xpath("./th | ./td")] for row in _own_rows(element)
                ]
                builder.extend(table_lines(rows), paragraphs=True)
                skipping = 1
            elif tag == "br":
                inline.append("\n")
            elif tag == "li":
                flush()
                inline.append("- ")
            elif tag in _BLOCKS:
                flush()
            if not skipping and element.text:
                inline.append(element.text)
            continue
        # end
        if skipping:
            skipping -= 1
            if skipping:
                continue
        elif tag in _BLOCKS:
            flush()
        if element is not root and element.tail:
            inline.append(element.tail)
    flush()


# ---------------------------------------------------------------------------------------------------
# PDF


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


# ---------------------------------------------------------------------------------------------------
# DOCX

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


# ---------------------------------------------------------------------------------------------------
# PPTX


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


# ---------------------------------------------------------------------------------------------------
# ODT

_ODF = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _safe_xml(data: bytes) -> Any:
    """Parse XML with entities unresolved, no DTD loaded and no network (ingest/extract.py has already
    refused any part that declares a DTD)."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False)
    return etree.fromstring(data, parser=parser)


def _odf_text(element: Any) -> str:
    parts: list[str] = []
    for node in element.iter():
        local = node.tag.rsplit("}", 1)[-1] if isinstance(node.tag, str) else ""
        if node is not element and local in ("note", "annotation"):
            continue
        if local in ("s", "tab", "line-break"):
            parts.append(" ")
        if node.text and local not in ("note-citation",):
            parts.append(node.text)
        if node is not element and node.tail:
            parts.append(node.tail)
    return clean_text("".join(parts))


def parse_odt(source: str, raw: bytes) -> ParsedDocument:
    """Headings (text:h with their outline level), paragraphs, lists and tables of an OpenDocument text."""
    import zipfile

    from lxml import etree

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            content = _safe_xml(archive.read("content.xml"))
            names = set(archive.namelist())
            meta = _safe_xml(archive.read("meta.xml")) if "meta.xml" in names else None
    except (KeyError, zipfile.BadZipFile, etree.XMLSyntaxError) as exc:
        raise ExtractionFailed(f"corrupt ODT: {type(exc).__name__}: {exc}") from exc
    meta_title = meta.findtext(".//dc:title", namespaces=_ODF) if meta is not None else None
    builder = SectionBuilder(clean_text(meta_title or "") or None)
    body = content.find("office:body/office:text", namespaces=_ODF)
    if body is None:
        raise ExtractionFailed("not an OpenDocument text: no office:text body")

    def visit(container: Any, prefix: str) -> None:
        for child in container:
            local = child.tag.rsplit("}", 1)[-1] if isinstance(child.tag, str) else ""
            namespace = child.tag[1:].split("}")[0] if isinstance(child.tag, str) and "}" in child.tag else ""
            if namespace == _ODF["text"] and local == "h":
                level = child.get(f"{{{_ODF['text']}}}outline-level") or "1"
                title = _odf_text(child)
                if title:
                    builder.heading(int(level) if level.isdigit() else 1, title)
            elif namespace == _ODF["text"] and local == "p":
                text = _odf_text(child)
                if text:
                    builder.add(prefix + text)
                    if not prefix:
                        builder.add("")
            elif namespace == _ODF["text"] and local == "list-item":
                visit(child, "- ")
            elif namespace == _ODF["table"] and local == "table":
                rows = [
                    [_odf_text(cell) for cell in row.iterchildren(f"{{{_ODF['table']}}}table-cell")]
                    for row in child.iter(f"{{{_ODF['table']}}}table-row")
                ]
                builder.extend(table_lines(rows), paragraphs=True)
            elif namespace in (_ODF["text"], _ODF["office"]) or local in ("section", "list"):
                visit(child, prefix)

    visit(body, "")
    return builder.finish(source, "odt")


# ---------------------------------------------------------------------------------------------------
# E-mail

MAX_EMAIL_PARTS = 1000
_TEXT_ATTACHMENTS = {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "text/html"}


def parse_eml(source: str, raw: bytes) -> ParsedDocument:
    """The message body (plain text, or HTML reduced to text) under its subject, and text attachments as
    sections of their own. Attachments are read in memory and never written: their names are only shown."""
    import email
    from email import policy
    from email.message import EmailMessage

    try:
        message = email.message_from_bytes(raw, policy=policy.default)
        if sum(1 for _ in message.walk()) > MAX_EMAIL_PARTS:
            raise ExtractionFailed(f"e-mail with more than {MAX_EMAIL_PARTS} parts: refused")
        subject = clean_text(str(message.get("subject") or ""))
        title = subject or title_from_path(source)
        header = "; ".join(
            f"{name}: {clean_text(str(message.get(name)))}"
            for name in ("From", "To", "Date")
            if message.get(name)
        )
        sections: list[Section] = []
        body_part = message.get_body(preferencelist=("plain", "html"))
        body = _part_text(body_part) if body_part is not None else ""
        sections.append(Section([title], "", "\n\n".join(p for p in (header, body) if p)))
        listed: list[str] = []
        for part in message.iter_attachments():
            # The name is only ever displayed: '../../x' stays a label, never a path.
            name = PurePosixPath((part.get_filename() or "").replace("\\", "/")).name or "attachment"
            if part.get_content_type() in _TEXT_ATTACHMENTS and isinstance(part, EmailMessage):
                text = _part_text(part)
                if text:
                    sections.append(Section([title, f"Attachment: {name}"], "", text))
                    continue
            listed.append(f"{name} ({part.get_content_type()})")
        if listed:
            sections.append(
                Section([title, "Attachments"], "", "Attachments not indexed: " + ", ".join(listed))
            )
    except ExtractionFailed:
        raise
    except (LookupError, ValueError, TypeError, AttributeError, UnicodeError) as exc:
        raise ExtractionFailed(f"corrupt e-mail: {type(exc).__name__}: {exc}") from exc
    return ParsedDocument(source, title, "eml", [s for s in sections if s.text.strip()], {"subject": subject})


def _part_text(part: Any) -> str:
    content = part.get_content()
    if isinstance(content, bytes):
        content = decode_text(content)[0]
    if not isinstance(content, str):
        return ""
    if part.get_content_type() == "text/html":
        document = parse_html("message.html", content)
        return "\n\n".join(section.text for section in document.sections)
    return content.strip()


# ---------------------------------------------------------------------------------------------------
# CSV


def parse_csv(source: str, text: str) -> ParsedDocument:
    """Rows as "column: value; ..." paragraphs under the file's title, the first row taken as the header."""
    delimiter = "\t" if source.lower().endswith(".tsv") else ","
    if delimiter == ",":
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
        except csv.Error:
            pass
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise ExtractionFailed(f"malformed CSV: {exc}") from exc
    title = title_from_path(source)
    lines = table_lines(rows)
    sections = [Section([title], "", "\n\n".join(lines))] if lines else []
    return ParsedDocument(source, title, "csv", sections, {"rows": max(len(rows) - 1, 0)})
