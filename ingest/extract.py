"""A file's bytes into a ParsedDocument: checks what the bytes really are, refuses hostile containers
(compression bombs, XML with a document type declaration), decodes text, and hands each format to its parser.

It never opens or writes a file; ingest/sandbox.py runs it in a worker under a time and memory limit.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ingest.decode import decode_text
from ingest.document import ExtractionFailed, ParsedDocument, UnsupportedFile
from ingest.parsers import csv, docx, eml, html, markdown, odt, pdf, pptx, rst, text, xlsx


@dataclass(frozen=True)
class Format:
    name: str  # the file type each chunk records
    parse: Callable[[str, bytes], ParsedDocument]


def _decoded(name: str, parse: Callable[[str, str], ParsedDocument]) -> Format:
    """A text format: its bytes decoded first; an encoding other than UTF-8 is kept in the metadata."""

    def parse_bytes(source: str, raw: bytes) -> ParsedDocument:
        text, encoding = decode_text(raw)
        document = parse(source, text)
        if encoding != "utf-8":
            document.metadata["encoding"] = encoding
        return document

    return Format(name, parse_bytes)


MARKDOWN = _decoded("markdown", markdown.parse_markdown)
HTML = Format("html", html.parse_html)
# The one table of what ragsvc reads: suffix -> format and its parser (ingest/parsers/, one module a format).
FORMATS: dict[str, Format] = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".mdx": MARKDOWN,
    ".rst": _decoded("rst", rst.parse_rst),
    ".txt": _decoded("text", text.parse_text),
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".pdf": Format("pdf", pdf.parse_pdf),
    ".docx": Format("docx", docx.parse_docx),
    ".pptx": Format("pptx", pptx.parse_pptx),
    ".odt": Format("odt", odt.parse_odt),
    ".eml": Format("eml", eml.parse_eml),
    ".csv": _decoded("csv", csv.parse_csv),
    ".tsv": _decoded("csv", csv.parse_csv),
    ".xlsx": Format("xlsx", xlsx.parse_xlsx),  # by unstructured: formats ragsvc has no parser of its own
}
SUPPORTED_SUFFIXES = frozenset(FORMATS)
ZIP_FORMATS = {"docx", "pptx", "odt", "xlsx"}


# A document's parts together may inflate to this much; a DOCX of a thousand pages with its images is far
# below it, a compression bomb far above.
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
# What a file is, by its first bytes, whatever its name says.
_MAGIC = (
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"%PDF-", "a PDF"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office (OLE2) file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
)
# A DTD is how an XML external entity (file:///etc/passwd) or an entity bomb is declared; the XML of
# OOXML and ODF files never needs one.
_DTD_MARKERS = tuple(
    marker.encode(encoding)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for encoding in ("utf-8", "utf-16-le", "utf-16-be")
)


def sniff(raw: bytes) -> str | None:
    """What the bytes are by their magic number, or None for anything else (text, among others)."""
    head = raw[:16]
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def extract_document(source: str, raw: bytes) -> ParsedDocument:
    """The document in a file's bytes, by the parser its suffix names, once the bytes are what it says."""
    suffix = PurePosixPath(source).suffix.lower()
    if suffix not in FORMATS:
        raise UnsupportedFile(f"{source}: unsupported file type {suffix or '(none)'!r}")
    kind, name = FORMATS[suffix].name, suffix
    found = sniff(raw)
    if kind in ZIP_FORMATS:
        if found != "a zip archive":
            raise ExtractionFailed(f"not a {name} file: its content is {found or 'not a zip container'}")
        check_zip(raw)
    elif kind == "pdf":
        # PDF readers accept the header anywhere in the first kilobyte.
        if found != "a PDF" and not (found is None and b"%PDF-" in raw[:1024]):
            raise ExtractionFailed(f"not a PDF: its content is {found or 'something else'}")
    elif found is not None:
        # Never parsed as what its name says: a zip bomb renamed to .md is refused unopened.
        raise ExtractionFailed(f"not a {name} file: its content is {found}")

    return FORMATS[suffix].parse(source, raw)


def check_zip(raw: bytes) -> None:
    """Refuse a zip container that inflates past the limit (counting the bytes actually inflated, since
    headers can lie), has too many parts, is encrypted, or holds XML with a document type declaration."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ExtractionFailed(f"corrupt zip container: {exc}") from exc
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise ExtractionFailed(
                f"zip container with {len(members)} parts: over the limit of {MAX_ZIP_MEMBERS}"
            )
        declared = sum(m.file_size for m in members)
        if declared > MAX_UNZIPPED_BYTES:
            raise ExtractionFailed(
                f"compression bomb: its parts claim to inflate to {declared:,} bytes, "
                f"over the limit of {MAX_UNZIPPED_BYTES:,}"
            )
        inflated = 0
        for member in members:
            if member.flag_bits & 0x1:
                raise ExtractionFailed(f"encrypted part {member.filename!r}: not supported")
            is_xml = member.filename.lower().endswith((".xml", ".rels"))
            tail = b""
            try:
                with archive.open(member) as part:
                    while piece := part.read(1 << 20):
                        inflated += len(piece)
                        if inflated > MAX_UNZIPPED_BYTES:
                            raise ExtractionFailed(
                                f"compression bomb: inflates past the limit of {MAX_UNZIPPED_BYTES:,} bytes"
                            )
                        if is_xml:
                            window = tail + piece
                            if any(marker in window for marker in _DTD_MARKERS):
                                raise ExtractionFailed(
                                    f"XML part {member.filename!r} declares a DTD (entities, possibly external): "
                                    "refused"
                                )
                            tail = window[-32:]
            except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError) as exc:
                raise ExtractionFailed(f"corrupt zip part {member.filename!r}: {exc}") from exc
