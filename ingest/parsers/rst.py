"""reStructuredText (Sphinx) into headed sections: each keeps its heading trail and the anchor Sphinx gives
it; markup noise (roles, directive options, link targets, drawn borders) is dropped and the text inside it
kept; literal and code blocks are fenced; a table row becomes one "column: value; ..." line."""

from __future__ import annotations

import csv
import re

from ingest.document import ParsedDocument, SectionBuilder, code_fence, labelled_rows, title_from_path
from ingest.parsers.sphinx import DROP_DIRECTIVES, role_words

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.-]+)::\s?(.*)$")
_COMMENT_OR_TARGET = re.compile(r"^(\s*)\.\.(\s|$)")
_OPTION = re.compile(r"^\s+:[\w-]+:")
_ROLE_WITH_TITLE = re.compile(r":[\w:+.-]+:`([^`<]*?)\s*<[^`>]*>`")
_ROLE = re.compile(r":([\w:+.-]+):`([^`]*)`")
_LINK_WITH_TITLE = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_LINK_REF = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``([^`]+)``")
_EMPHASIS = re.compile(r"(\*\*|\*)(\S(?:.*?\S)?)\1")
_BOLD_SPAN = re.compile(r"\*\*(\S(?:(?!\n[ \t]*\n)[^*])*?\S)\*\*")  # **bold across\nlines**, not paragraphs
_FOOTNOTE_REF = re.compile(r"\s?\[(#|\*|\d+|#\w+)\]_")
_SUBSTITUTION = re.compile(r"\|([^|\s][^|]*?)\|_?")
_FIELD = re.compile(r"^:[\w-]+:(\s.*)?$")
_ANONYMOUS_TARGET = re.compile(r"^__\s+\S+\s*$")
_CODE_DIRECTIVES = ("code-block", "code", "sourcecode")
_VERSION_NOTES = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "versionremoved": "Removed in version",
}


def _rst_inline(text: str) -> str:
    role = role_words
    text = _ROLE_WITH_TITLE.sub(r"\1", text)
    text = _ROLE.sub(role, text)
    text = _LINK_WITH_TITLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK_REF.sub(r"\1", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _SUBSTITUTION.sub(r"\1", text)
    return text


def _rst_spans(text: str) -> str:
    """Inline markup left over after line-by-line cleaning because it runs across a line break."""
    if "`" not in text and "**" not in text:
        return text
    return _BOLD_SPAN.sub(r"\1", _rst_inline(text))


def _rst_table_rows(kind: str, block: list[str]) -> list[str]:
    options: dict[str, str] = {}
    body: list[str] = []
    for line in block:
        option = re.match(r"^\s+:([\w-]+):\s*(.*)$", line)
        if option and not body:
            options[option.group(1)] = option.group(2).strip()
        elif line.strip() or body:
            body.append(line.strip())
    rows: list[list[str]] = []
    if kind == "csv-table":
        delim = {"tab": "\t", "space": " "}.get(
            options.get("delim", ","), options.get("delim", ",")[:1] or ","
        )
        rows = [r for r in csv.reader([b for b in body if b], delimiter=delim, skipinitialspace=True) if r]
    else:
        for line in body:
            row_start = re.match(r"^[*+-]\s+[*+-](?:\s+(.*))?$", line)
            cell_start = re.match(r"^[*+-](?:\s+(.*))?$", line)
            if row_start:
                rows.append([row_start.group(1) or ""])
            elif cell_start and rows:
                rows[-1].append(cell_start.group(1) or "")
            elif line and rows:
                rows[-1][-1] = f"{rows[-1][-1]} {line}".strip()
    if not rows:  # a form not understood here: keep its text rather than lose it
        return [_rst_inline(line) for line in body if line]
    rows = [[_rst_inline(cell).strip() for cell in row] for row in rows]
    header_rows = min(
        int(options.get("header-rows", "0") or 0) if options.get("header-rows", "0").isdigit() else 0,
        len(rows),
    )
    header = rows[0] if header_rows else []
    if "header" in options:
        header = [
            _rst_inline(c).strip() for c in next(csv.reader([options["header"]], skipinitialspace=True))
        ]
    return labelled_rows(header, rows[header_rows:])


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


class _CodeBlock:
    """A literal block (after "::") or a code directive's body: the lines indented deeper than `indent`, kept
    verbatim between fences."""

    def __init__(self, builder: SectionBuilder, indent: int, language: str) -> None:
        self.builder, self.indent, self.language = builder, indent, language
        self.dedent: int | None = None  # the first code line's indentation, taken off every line
        self.blank_lines = 0

    def take(self, line: str) -> bool:
        """Whether the line belongs to the block (blank lines inside it included)."""
        if not line.strip():
            self.blank_lines += self.dedent is not None
            return True
        if _indent(line) <= self.indent:
            return False
        if self.dedent is None:
            self.builder.add(code_fence(info=self.language))
            self.dedent = _indent(line)
        self.builder.extend([""] * self.blank_lines)
        self.blank_lines = 0
        self.builder.add(line[min(self.dedent, _indent(line)) :].rstrip())
        return True

    def close(self) -> None:
        if self.dedent is not None:
            self.builder.add(code_fence())
            self.builder.add("")


def parse_rst(source: str, text: str) -> ParsedDocument:
    lines = text.expandtabs(8).splitlines()  # docutils' tab stops
    styles: list[tuple[str, bool]] = []
    # Lines are cleaned one by one; a link, role or bold phrase that runs across lines is cleaned when
    # its section closes.
    builder = SectionBuilder(None, spans=_rst_spans)
    skip_deeper_than: int | None = None
    in_directive_options = False
    code: _CodeBlock | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if skip_deeper_than is not None:
            if not stripped or _indent(line) > skip_deeper_than:
                i += 1
                continue
            skip_deeper_than = None
        if in_directive_options:
            if _OPTION.match(line):
                i += 1
                continue
            in_directive_options = False
        if code is not None:
            if code.take(line):
                i += 1
                continue
            code.close()
            code = None

        # Headings: text over an adornment line, optionally with an overline of the same character.
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        overline = bool(_ADORNMENT.match(line)) and i + 2 < len(lines) and bool(stripped)
        if (
            overline
            and lines[i + 1].strip()
            and lines[i + 2].strip() == stripped
            and not _ADORNMENT.match(lines[i + 1])
        ):
            title_line, char, has_over, consumed = lines[i + 1], stripped[0], True, 3
        elif (
            stripped
            and _indent(line) == 0
            and _ADORNMENT.match(nxt)
            and len(nxt.strip()) >= min(len(stripped), 3)
            and not _ADORNMENT.match(line)
        ):
            title_line, char, has_over, consumed = line, nxt.strip()[0], False, 2
        else:
            title_line = None
        if title_line is not None:
            style = (char, has_over)
            if style not in styles:
                styles.append(style)
            title = _rst_inline(title_line.strip())
            builder.heading(styles.index(style) + 1, title)
            i += consumed
            continue

        directive = _DIRECTIVE.match(line)
        if directive:
            indent, name, argument = len(directive.group(1)), directive.group(2).lower(), directive.group(3)
            if name in DROP_DIRECTIVES or name.startswith(("auto", "only")) and name != "only":
                skip_deeper_than = indent
            elif name in ("csv-table", "list-table"):
                block_end = i + 1
                while block_end < len(lines) and (
                    not lines[block_end].strip() or _indent(lines[block_end]) > indent
                ):
                    block_end += 1
                if argument.strip():
                    builder.add(_rst_inline(argument.strip()))
                builder.extend(_rst_table_rows(name, lines[i + 1 : block_end]), paragraphs=True)
                i = block_end
                continue
            else:
                if name in _VERSION_NOTES:
                    # Sphinx renders these as a sentence; a bare version number is noise to a reader.
                    version = argument.split()[0] if argument.strip() else ""
                    builder.add(" " * indent + f"{_VERSION_NOTES[name]} {version}".strip() + ".")
                elif argument.strip() and name not in (*_CODE_DIRECTIVES, "math", "figure"):
                    builder.add(" " * indent + _rst_inline(argument.strip()))
                if name in _CODE_DIRECTIVES:
                    code = _CodeBlock(builder, indent, argument)
                in_directive_options = True
            i += 1
            continue
        if _FIELD.match(line) and not builder.seen_heading and not "".join(builder.lines).strip():
            i += 1  # file-wide metadata before the title (:orphan:, :tocdepth: 2): not prose
            continue
        if _ANONYMOUS_TARGET.match(line):
            i += 1  # "__ https://...": the target of an anonymous link, a bare URL
            continue
        if _COMMENT_OR_TARGET.match(line):
            # A comment, a hyperlink target or a substitution definition: no prose inside.
            skip_deeper_than = _indent(line)
            i += 1
            continue
        if stripped.endswith("::") and not stripped.startswith(".."):
            line = line.rstrip()[:-1].rstrip(":") + (":" if stripped != "::" else "")
            code = _CodeBlock(builder, _indent(line), "")
        if re.match(r"^\s*[=+-][=+\s-]+$", line) and len(stripped) > 3:
            i += 1  # table borders
            continue
        builder.add(
            _rst_inline(
                line.replace("|", " ") if stripped.startswith("|") and stripped.endswith("|") else line
            )
        )
        i += 1
    if code is not None:
        code.close()
    builder.close()
    title = builder.title or title_from_path(source)
    for section in builder.sections:
        if not section.trail:
            section.trail = [title]
    return ParsedDocument(source, title, "rst", builder.sections)
