"""HTML pages (lxml): h1-h6 become the section trail, page furniture (navigation, scripts, footers) is dropped,
tables become column-labelled lines."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ingest.decode import decode_text
from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    SectionBuilder,
    clean_text,
    code_fence,
    table_lines,
    title_from_path,
)

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


# The language a highlighter names in a class: language-yaml (Prism, highlight.js), highlight-python (Sphinx),
# lang-js.
_LANGUAGE_CLASS = re.compile(r"\b(?:language|lang|highlight)-([\w+#-]+)")


def _code_language(pre: Any) -> str:
    """The language of a <pre> block, from its class, its <code>'s or its wrapper's (Sphinx's div)."""
    for element in (pre, *pre.xpath("./code"), pre.getparent(), *pre.xpath("./parent::*/parent::*")):
        found = _LANGUAGE_CLASS.search(element.get("class", "") if element is not None else "")
        if found and found.group(1) not in ("default", "none", "text"):
            return found.group(1)
    return ""


def parse_html(source: str, raw: bytes | str, file_type: str = "html") -> ParsedDocument:
    """Headings h1-h6 as sections (anchored by their id, as Sphinx and MkDocs write it); navigation,
    scripts, styles and hidden parts dropped; tables as labelled rows; code blocks fenced, line by line."""
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
                code = element.text_content().strip("\n").splitlines()
                if "".join(code).strip():
                    opening = code_fence(info=_code_language(element))
                    builder.extend([opening, *(line.rstrip() for line in code), code_fence(), ""])
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
