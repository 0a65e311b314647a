"""Bytes into text: a byte order mark, then UTF-8, then charset detection; binary content is refused."""

from __future__ import annotations

import codecs
import re

from ingest.document import ExtractionFailed

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Control characters that text does not hold (tab, newlines, form feed and the ESC of terminal colours
# excepted); many of them mean binary content.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")


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
