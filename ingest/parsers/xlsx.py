"""Excel workbooks (.xlsx) through unstructured, a format ragsvc has no parser of its own: one section a sheet.

unstructured is imported on the first such file only, inside the parsing worker (2-3 s, about 450 MB resident).
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    SectionBuilder,
    clean_text,
    table_lines,
    title_from_path,
)

# unstructured pings its telemetry endpoint when imported and prints a sales notice on its first partition
# unless these are set; the library reads only the environment for them.
_QUIET = {"DO_NOT_TRACK": "1", "SCARF_NO_ANALYTICS": "true", "UNSTRUCTURED_DISABLE_NOTICE": "1"}


def _unstructured() -> None:
    """Load unstructured quietly, with its spaCy model download turned into an error.

    The partitioning used here never needs spaCy's model (sheets are read as whole tables, no "is this a
    title?" guessing); should a later release reach for it anyway, the file fails with that reason instead
    of the worker trying to download a wheel.
    """
    for name, value in _QUIET.items():
        os.environ.setdefault(name, value)
    if tempfile.tempdir is None:
        # unstructured names a lock file in the temporary folder when imported, and finding that folder
        # means writing a probe file into it, which the worker may not do (RLIMIT_FSIZE 0). Named, never made.
        tempfile.tempdir = os.environ.get("TMPDIR") or "/tmp"
    from unstructured.nlp import tokenize

    def refuse_download() -> None:
        raise ExtractionFailed("unstructured wanted to download a spaCy model: refused (ragsvc runs offline)")

    tokenize._install_spacy_model = refuse_download


def parse_xlsx(source: str, raw: bytes) -> ParsedDocument:
    """One section per worksheet, headed by its name and anchored `sheet-N`; rows as "column: value" lines."""
    _unstructured()
    from unstructured.errors import UnprocessableEntityError
    from unstructured.partition.xlsx import partition_xlsx

    try:
        # find_subtable=False: each sheet is one table. Finding sub-tables classifies stray cells as titles
        # or narrative text with spaCy's tagger, which needs the model unstructured would download.
        elements = partition_xlsx(
            file=io.BytesIO(raw), find_subtable=False, include_header=False, infer_table_structure=True
        )
    except UnprocessableEntityError as exc:
        raise ExtractionFailed(f"unreadable XLSX: {exc}") from exc
    except (KeyError, ValueError, OSError) as exc:  # openpyxl's and pandas' ways of saying corrupt
        raise ExtractionFailed(f"corrupt XLSX: {type(exc).__name__}: {exc}") from exc
    title = title_from_path(source)
    builder = SectionBuilder(title)
    sheets: list[str] = []
    for element in elements:
        sheet = clean_text(element.metadata.page_name or "") or f"Sheet {len(sheets) + 1}"
        if sheet not in sheets:
            sheets.append(sheet)
            builder.heading(2, sheet, f"sheet-{len(sheets)}")
        builder.extend(element_lines(element), paragraphs=True)
    return builder.finish(source, "xlsx", {"sheets": len(sheets)})


def element_lines(element: Any) -> list[str]:
    """An unstructured element as lines of text: a table row by row, anything else as its text."""
    html = getattr(element.metadata, "text_as_html", None)
    if element.category == "Table" and html:
        return table_lines(_html_rows(html))
    text = clean_text(element.text or "")
    return [text] if text else []


def _html_rows(html: str) -> list[list[str]]:
    from lxml import html as lxml_html

    table = lxml_html.fragment_fromstring(html, create_parent="div")
    return [[cell.text_content() for cell in row.xpath("./td|./th")] for row in table.iter("tr")]
