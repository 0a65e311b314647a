"""OpenDocument text (lxml, never resolving entities): outline levels become the section trail."""

from __future__ import annotations

import io
from typing import Any

from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    SectionBuilder,
    clean_text,
    table_lines,
)

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
