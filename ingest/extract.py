"""A file's bytes into a ParsedDocument: checks what the bytes really are, refuses hostile containers
(compression bombs, XML with a document type declaration), decodes text, and hands each format to its parser.

It never opens or writes a file; ingest/sandbox.py runs it in a worker under a time and memory limit.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
import zlib
from pathlib import PurePosixPath

from indexes.errors import RagsvcError
from ingest.parse import DOC_SUFFIXES, ParsedDocument, UnsupportedFile, parse_text

# Suffix -> format. Text formats are parsed by ingest/parse.py, the others by ingest/formats.py.
FORMATS: dict[str, str] = {
    **DOC_SUFFIXES,
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".odt": "odt",
    ".eml": "eml",
    ".csv": "csv",
    ".tsv": "csv",
    ".xlsx": "xlsx",  # by unstructured (ingest/longtail.py): formats ragsvc has no parser of its own
}
SUPPORTED_SUFFIXES = frozenset(FORMATS)
ZIP_FORMATS = {"docx", "pptx", "odt", "xlsx"}
TEXT_FORMATS = {"markdown", "rst", "text", "csv"}

# A document's parts together may inflate to this much; a DOCX of a thousand pages with its images is far
# below it, a compression bomb far above.
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
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
# Control characters that text does not hold (tab, newlines, form feed and the ESC of terminal colours
# excepted); many of them mean binary content.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
# A DTD is how an XML external entity (file:///etc/passwd) or an entity bomb is declared; the XML of
# OOXML and ODF files never needs one.
_DTD_MARKERS = tuple(
    marker.encode(encoding)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for encoding in ("utf-8", "utf-16-le", "utf-16-be")
)


class ExtractionFailed(RagsvcError):
    """The file could not be turned into text; the message is the reason shown in the ingest summary."""

    code = "extraction_failed"


def file_format(source: str) -> str:
    suffix = PurePosixPath(source).suffix.lower()
    if suffix not in FORMATS:
        raise UnsupportedFile(f"{source}: unsupported file type {suffix or '(none)'!r}")
    return FORMATS[suffix]


def sniff(raw: bytes) -> str | None:
    """What the bytes are by their magic number, or None for anything else (text, among others)."""
    head = raw[:16]
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def extract_document(source: str, raw: bytes) -> ParsedDocument:
    kind = file_format(source)
    found = sniff(raw)
    name = PurePosixPath(source).suffix.lower()
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

    from ingest import formats

    if kind in ("markdown", "rst", "text"):
        text, encoding = decode_text(raw)
        document = parse_text(source, text)
        if encoding != "utf-8":
            document.metadata["encoding"] = encoding
        return document
    if kind == "csv":
        text, _ = decode_text(raw)
        return formats.parse_csv(source, text)
    if kind == "xlsx":
        from ingest import longtail

        return longtail.parse_xlsx(source, raw)
    parsers = {
        "html": formats.parse_html,
        "pdf": formats.parse_pdf,
        "docx": formats.parse_docx,
        "pptx": formats.parse_pptx,
        "odt": formats.parse_odt,
        "eml": formats.parse_eml,
    }
    if kind not in parsers:
        raise UnsupportedFile(f"{source}: no parser for {kind}")
    return parsers[kind](source, raw)


def decode_text(raw: bytes) -> tuple[str, str]:
    """Text and the encoding it was in: a byte order mark, then UTF-8, then charset detection."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return _checked_text(raw[len(bom) :].decode(encoding)), encoding.removesuffix(
                    "-le"
                ).removesuffix("-be")
            except UnicodeDecodeError as exc:
                raise ExtractionFailed(f"not valid {encoding} text despite its byte order mark") from exc
    if b"\x00" in raw:
        raise ExtractionFailed("binary content, not text")
    try:
        return _checked_text(raw.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    results = from_bytes(raw)
    best = results.best()
    if best is None or best.encoding is None:
        raise ExtractionFailed("not text in any known encoding")
    encoding = best.encoding
    # Short Western text fits several 8-bit code pages about equally; like browsers, prefer Windows-1252,
    # by far the most common of them, when it reads (nearly) as cleanly as the best guess.
    if any("cp1252" in r.could_be_from_charset and r.chaos <= best.chaos + 0.1 for r in results):
        encoding = "cp1252"
    return _checked_text(raw.decode(encoding, errors="replace")), encoding


def _checked_text(text: str) -> str:
    sample = text[:100_000]
    if len(_CONTROL_CHARS.findall(sample)) > max(8, len(sample) // 100):
        raise ExtractionFailed("binary content, not text")
    return text


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
