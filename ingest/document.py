"""The document model every parser produces: a document as headed sections, each with its heading trail and
the anchor a doc generator gives it; the section builder and table helpers parsers share; and the errors of
turning a file into a document. No parsing here."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from indexes.errors import RagsvcError
from indexes.payload import FENCE_LINE


class UnsupportedFile(RagsvcError):
    code = "unsupported_file"


class ExtractionFailed(RagsvcError):
    """The file could not be turned into text; the message is the reason shown in the ingest summary."""

    code = "extraction_failed"


@dataclass
class Section:
    trail: list[str]
    anchor: str
    text: str


@dataclass
class ParsedDocument:
    source: str
    title: str
    file_type: str
    sections: list[Section]
    metadata: dict[str, object] = field(default_factory=dict)


def slugify(title: str) -> str:
    """The anchor Sphinx (docutils make_id) and MkDocs give a heading: lowercase ASCII words joined by '-'."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


# A folder's own page: what a site shows as the folder's title in the breadcrumb above the pages inside it.
INDEX_STEMS = ("index", "README", "readme", "_index")


def title_from_path(source: str) -> str:
    stem = PurePosixPath(source).stem
    if stem in INDEX_STEMS:
        parent = PurePosixPath(source).parent.name
        stem = parent or stem
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or source


class SectionBuilder:
    """Collects lines under the current heading trail and closes a section at each new heading."""

    def __init__(self, title: str | None, spans: Callable[[str], str] | None = None) -> None:
        self.title = title
        self.spans = spans  # inline markup that may run across lines, applied to each section's text
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = []
        self.lines: list[str] = []
        self.anchor = ""
        self.seen_heading = False

    def trail(self) -> list[str]:
        trail = [t for _, t in self.stack]
        if self.title and (not trail or trail[0] != self.title):
            trail.insert(0, self.title)
        return trail

    def close(self) -> None:
        text = "\n".join(self.lines)
        if self.spans is not None:
            text = outside_code(text, self.spans)
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if text:
            self.sections.append(Section(self.trail(), self.anchor, text))
        self.lines = []

    def heading(self, level: int, title: str, anchor: str | None = None) -> None:
        self.close()
        # The page's own title heading is the page itself: link to the page, not to an anchor.
        is_page_title = not self.seen_heading and (self.title is None or title == self.title)
        self.seen_heading = True
        if self.title is None:
            self.title = title
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title))
        self.anchor = "" if is_page_title else (anchor or slugify(title))

    def add(self, line: str) -> None:
        self.lines.append(line)

    def extend(self, lines: list[str], paragraphs: bool = False) -> None:
        """Add lines; as paragraphs, a chunk boundary falls between them (table rows), never inside."""
        for line in lines:
            self.lines.extend([line, ""] if paragraphs else [line])

    def finish(
        self, source: str, file_type: str, metadata: dict[str, object] | None = None
    ) -> ParsedDocument:
        """Close the last section; a page with no heading takes its title from its file name."""
        self.close()
        title = self.title or title_from_path(source)
        for section in self.sections:
            if not section.trail:
                section.trail = [title]
        return ParsedDocument(source, title, file_type, self.sections, metadata or {})


def labelled_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    """Table rows as "column: value; ..." lines, so that a row still says what its values are when a
    chunk boundary separates it from the header."""
    out = []
    for row in rows:
        cells = [c.strip() for c in row]
        if header and len(header) >= len([c for c in cells if c]):
            pairs = [f"{h}: {c}" if h else c for h, c in zip(header, cells, strict=False) if c]
            out.append("; ".join(pairs))
        else:
            out.append("; ".join(c for c in cells if c))
    return [row for row in out if row]


# A code block in a section's text is fenced as in Markdown ("```yaml" ... "```"), whatever the source format:
# a reader, and an LLM quoting it, see where code starts and ends. The chunker keeps a block's fences balanced.
_FENCE_LANGUAGE = re.compile(r"[\w+#-][\w+#.-]*")


def code_fence(marker: str = "```", info: str = "") -> str:
    """A fence line with the block's language only: "```yaml" for ```yaml title="app.yaml" {3}."""
    language = _FENCE_LANGUAGE.match(info.strip().lstrip("{."))
    return marker + (language.group(0) if language else "")


def closes_fence(line: str, marker: str) -> bool:
    """Whether the line closes a fence opened with marker: the same character, at least as many."""
    stripped = line.strip()
    return len(stripped) >= len(marker) and set(stripped) == {marker[0]}


def fence_after(text: str, marker: str | None) -> str | None:
    """The fence still open at the end of `text`, given the one open at its start (None: none is)."""
    for line in text.split("\n"):
        if marker is None:
            opened = FENCE_LINE.match(line)
            marker = opened.group(1) if opened else None
        elif closes_fence(line, marker):
            marker = None
    return marker


def outside_code(text: str, change: Callable[[str], str]) -> str:
    """`text` with `change` applied to its prose only, never inside a fenced code block."""
    if not FENCE_LINE.search(text):
        return change(text)
    parts: list[str] = []
    run: list[str] = []
    marker: str | None = None
    for line in text.split("\n"):
        after = fence_after(line, marker)
        if marker is None and after is None:
            run.append(line)
            continue
        if run:  # a fence opens here: the prose before it is done
            parts.append(change("\n".join(run)))
            run = []
        parts.append(line)
        marker = after
    parts.extend([change("\n".join(run))] if run else [])
    return "\n".join(parts)


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


def breadcrumb(source: str, folder_titles: dict[str, str]) -> list[str]:
    """The titles of the folders above a page, outermost first, as the site's breadcrumb shows them ("Go" above
    languages/go/quickstart.md); a folder without an index page has none. Pages that share a title ("Quick
    start" for each language) differ by it. An index page's own folder is the page itself."""
    path = PurePosixPath(source)
    folders = list(reversed(path.parents))[1:]  # the top folder's title would be on every page: left out
    if path.stem in INDEX_STEMS and folders:
        folders = folders[:-1]
    return [folder_titles[str(folder)] for folder in folders if str(folder) in folder_titles]
