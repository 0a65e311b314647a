"""CSV and TSV: rows as column-labelled paragraphs under the title of the file."""

from __future__ import annotations

import csv
import io

from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    Section,
    table_lines,
    title_from_path,
)


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
