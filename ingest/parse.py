"""Doc-folder parsers: reStructuredText (Sphinx), Markdown (Hugo, MkDocs) and plain text into sections.

Each section keeps its heading trail and the anchor a doc generator would give it; markup noise (roles,
directive options, shortcodes, link targets, fences, drawn borders) is dropped and the text inside it kept;
a table row becomes one "column: value; ..." line. No chunking here.
"""

from __future__ import annotations

import csv
import re
import tomllib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import yaml

from indexes.errors import RagsvcError


class UnsupportedFile(RagsvcError):
    code = "unsupported_file"


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


DOC_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst", ".txt": "text"}


def slugify(title: str) -> str:
    """The anchor Sphinx (docutils make_id) and MkDocs give a heading: lowercase ASCII words joined by '-'."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


def parse_text(source: str, text: str) -> ParsedDocument:
    suffix = PurePosixPath(source).suffix.lower()
    kind = DOC_SUFFIXES.get(suffix)
    if kind == "rst":
        return parse_rst(source, text)
    if kind == "markdown":
        return parse_markdown(source, text)
    if kind == "text":
        title = title_from_path(source)
        return ParsedDocument(source, title, "text", [Section([title], "", text.strip())])
    raise UnsupportedFile(f"{source}: unsupported file type {suffix or '(none)'!r}")


def title_from_path(source: str) -> str:
    stem = PurePosixPath(source).stem
    if stem in ("index", "README", "readme", "_index"):
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
            text = self.spans(text)
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


# ---------------------------------------------------------------------------------------------------
# reStructuredText

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
_VERSION_NOTES = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
    "versionremoved": "Removed in version",
}

# Directives whose body is navigation or machinery, not prose: dropped with their content.
_DROP_DIRECTIVES = {
    "toctree",
    "contents",
    "index",
    "raw",
    "include",
    "literalinclude",
    "highlight",
    "meta",
    "image",
    "sectnum",
    "target-notes",
    "default-role",
    "role",
    "currentmodule",
    "module",
    "autosummary",
    "automodule",
    "autoclass",
    "autofunction",
    "ifconfig",
    "tags",
    "rst-class",
    "cssclass",
    "youtube",
    "vimeo",
    "iframe",
    "video",
    "bibliography",
    "glossary-index",
    "jinja",
    "mermaid",
    "graphviz",
    "uml",
    "plot",
    "exec",
    "program-output",
    "command-output",
    "substitution-definition",
}


# Icon roles of sphinx-design, sphinx-icons and friends (material-* too).
_ICON_ROLES = {"octicon", "fas", "far", "fab", "fa", "icon", "iconify", "material"}


def _role(match: re.Match[str]) -> str:
    """The words a Sphinx (or MyST) role shows: its title, a page or label as words, nothing for an icon."""
    name, target = match.group(1), match.group(2).lstrip("~!")
    titled = re.fullmatch(r"(.*?)\s*<[^<>]*>", target, re.S)
    if titled and titled.group(1):
        return titled.group(1)
    if name in _ICON_ROLES or name.startswith("material-"):
        return ""  # an icon's name and size (account_circle;2em) are no words of the page
    if name == "menuselection":
        return target.replace("-->", ">").replace("&", "")
    if name == "guilabel":
        return target.replace("&", "")
    if name in ("doc", "ref", "numref", "download", "any", "std:doc", "std:ref"):
        target = target.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ")
    elif name.startswith(("py:", "func", "class", "meth", "mod", "attr", "obj", "data", "exc")):
        target = target.rsplit(".", 1)[-1] if name in ("class", "meth", "func", "attr") else target
    return target


def _rst_inline(text: str) -> str:
    role = _role
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


def parse_rst(source: str, text: str) -> ParsedDocument:
    lines = text.expandtabs(8).splitlines()  # docutils' tab stops
    styles: list[tuple[str, bool]] = []
    # Lines are cleaned one by one; a link, role or bold phrase that runs across lines is cleaned when
    # its section closes.
    builder = SectionBuilder(None, spans=_rst_spans)
    skip_deeper_than: int | None = None
    in_directive_options = False
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
            if name in _DROP_DIRECTIVES or name.startswith(("auto", "only")) and name != "only":
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
                elif argument.strip() and name not in ("code-block", "code", "sourcecode", "math", "figure"):
                    builder.add(" " * indent + _rst_inline(argument.strip()))
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
        if re.match(r"^\s*[=+-][=+\s-]+$", line) and len(stripped) > 3:
            i += 1  # table borders
            continue
        builder.add(
            _rst_inline(
                line.replace("|", " ") if stripped.startswith("|") and stripped.endswith("|") else line
            )
        )
        i += 1
    builder.close()
    title = builder.title or title_from_path(source)
    for section in builder.sections:
        if not section.trail:
            section.trail = [title]
    return ParsedDocument(source, title, "rst", builder.sections)


# ---------------------------------------------------------------------------------------------------
# Markdown

_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*(\{#([\w-]+)[^}]*\})?\s*$")
# A code fence, or a MyST directive fence (```{note}, ```{code-block} python) with its argument.
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(?:\{([\w:-]+)\}\s*(.*?))?\s*$|^\s*(`{3,}|~{3,})")
# A colon fence: MyST (:::{note}) or Docusaurus (:::tip Title); a bare ::: closes one.
_COLON_FENCE = re.compile(r"^\s*(:{3,})\s*(?:\{([\w:-]+)\}|([A-Za-z][\w-]*))?\s*(.*?)\s*$")
_MYST_ROLE = re.compile(r"\{([\w:+.-]+)\}`([^`]*)`")
_MYST_TARGET = re.compile(r"^\s*\(([^()\s]+)\)=\s*$")  # (label)=
_MYST_COMMENT = re.compile(r"^%(\s|$)")
_MYST_OPTION = re.compile(r"^\s*:[\w-]+:(\s|$)")
_MDX_STATEMENT = re.compile(
    r"""^(import\s.*\sfrom\s+['"][^'"]+['"];?|import\s+['"][^'"]+['"];?|export\s+(const|default|function)\b.*)\s*$"""
)
# MyST directives whose body is code (kept verbatim) rather than Markdown (parsed).
_CODE_DIRECTIVES = {
    "code-block",
    "code",
    "sourcecode",
    "code-cell",
    "literalinclude",
    "math",
    "eval-rst",
    "mermaid",
}
_SHORTCODE = re.compile(r"\{\{[<%]\s*/?\s*([\w/-]+)?[^}]*?[%>]\}\}")
_SHORTCODE_TEXT_ARGS = re.compile(r'\b(?:title|caption|alt|text|header)\s*=\s*"([^"]*)"')
_SHORTCODE_POSITIONAL = re.compile(r'(?<![=\w])"([^"]*[A-Za-z][^"]*)"')
_PATH_LIKE = re.compile(r"[/\\]|\.(md|html?|png|jpe?g|svg|gif|ya?ml|json|toml)\b|^\w+:")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^)]*\))*\)")
_MD_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_MD_IMAGE_REF = re.compile(r"!\[([^\]]*)\]\[[^\]]*\]")
_MD_FOOTNOTE_DEF = re.compile(r"^\s{0,3}\[\^[^\]\s]+\]:\s*(.*)$")
_BLOCKQUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_MD_FOOTNOTE_REF = re.compile(r"\[\^[^\]\s]+\](?!:)")
_MD_ALERT = re.compile(r"\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\]", re.I)
# A shortcut reference link, [Widget docs], defined elsewhere on the page: its words without the brackets
# (not an index such as arr[0] or dict[str]).
_MD_SHORTCUT_LINK = re.compile(r"(?<![\w\]!])\[([A-Za-z#][^\]\[]*)\](?![(\[:])")
# A tag left open at the end of a line: <img src="..." and its attributes on the lines below.
_OPEN_TAG = re.compile(r"<[a-zA-Z][\w-]*(\s[^<>]*)?$")
_MD_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+\S+")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>\n]*>")
# !!! note "Title", ??? tip, !!! info inline end "Title" (MkDocs Material modifiers before the title).
_ADMONITION = re.compile(r'^(\s*)(?:!!!|\?\?\?\+?)\s*([\w-]+)(?:\s+(?:inline|end))*(?:\s+"([^"]*)")?\s*$')
_MD_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_CONTENT_TAB = re.compile(r'^\s*===\+?\s+"([^"]*)"\s*$')  # MkDocs (pymdownx.tabbed) tab label
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(\S(?:.*?\S)?)\1")
_MD_CODE = re.compile(r"`([^`]+)`")
# An attribute list: { #id .class key="value" }, which starts with an id, a class or a key=value.
_ATTR_LIST = re.compile(r"""\{:?\s*(?:[#.][^}]*|[\w-]+=(?:"[^"]*"|'[^']*'|[^\s}]+)[^}]*)\}""")
# MkDocs Material icon and emoji shortcodes: :material-account-circle:, :octicons-rocket-16:.
_MD_ICON = re.compile(r":(?:material|octicons|fontawesome|simple|bootstrap)-[\w-]+:")
# A line drawn only with rule characters: "---", "***", "+-----+----+", "=====": layout, no words.
_RULE_LINE = re.compile(r"^\s*(?=[-+=_*~|:. ]*[-=_*~]{3})[-+=_*~|:. ]+$")


def _front_matter(text: str) -> tuple[dict[str, object], str]:
    for fence, loader in (("---", yaml.safe_load), ("+++", tomllib.loads)):
        if text.startswith(fence + "\n") or text.startswith(fence + "\r\n"):
            end = re.search(rf"^{re.escape(fence)}\s*$", text[len(fence) + 1 :], re.M)
            if end:
                body = text[len(fence) + 1 : len(fence) + 1 + end.start()]
                try:
                    meta = loader(body) or {}
                except Exception:  # malformed front matter is kept as text rather than lost
                    return {}, text
                return (meta if isinstance(meta, dict) else {}), text[len(fence) + 1 + end.end() :]
    return {}, text


def _md_inline(text: str) -> str:
    def shortcode(match: re.Match[str]) -> str:
        labels = _SHORTCODE_TEXT_ARGS.findall(match.group(0))
        if (match.group(1) or "") not in ("ref", "relref", "param", "readfile", "include"):
            # A quoted positional argument is a label ({{< tab "macOS" >}}, {{% expand "Details" %}}),
            # unless it is a path or an address.
            labels += [a for a in _SHORTCODE_POSITIONAL.findall(match.group(0)) if not _PATH_LIKE.search(a)]
        words = " ".join(labels)
        return f"{words} " if words else ""

    text = _SHORTCODE.sub(shortcode, text)
    text = _MYST_ROLE.sub(_role, text)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_IMAGE_REF.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_REF_LINK.sub(r"\1", text)
    text = _MD_FOOTNOTE_REF.sub("", text)
    text = _MD_ALERT.sub(lambda m: m.group(1).capitalize(), text)
    text = _MD_SHORTCUT_LINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = _ATTR_LIST.sub("", text)
    text = _MD_ICON.sub("", text)
    text = _MD_CODE.sub(r"\1", text)
    text = _MD_EMPHASIS.sub(r"\2", text)
    return text


def _md_cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))
    return [_md_inline(cell.replace("\\|", "|")).strip() for cell in cells]


def _closes(line: str, marker: str) -> bool:
    """Whether the line closes a fence opened with marker: the same character, at least as many."""
    stripped = line.strip()
    return len(stripped) >= len(marker) and set(stripped) == {marker[0]}


def parse_markdown(source: str, text: str) -> ParsedDocument:
    meta, body = _front_matter(text.replace("\r\n", "\n"))
    body = _HTML_COMMENT.sub("", body)
    meta_title = meta.get("title") or meta.get("linkTitle")
    builder = SectionBuilder(str(meta_title).strip() if meta_title else None)
    summary = meta.get("description") or meta.get("summary")
    if isinstance(summary, str) and summary.strip():
        # The page's own one-line summary (Hugo, Docsy, MkDocs): the author's words for what it answers.
        builder.add(_md_inline(summary.strip()))
        builder.add("")
    lines = body.splitlines()
    fence: str | None = None
    keep_fenced = True
    directives: list[str] = []  # open MyST/Docusaurus directive fences whose body is Markdown
    in_options = False
    tag_open = False
    table_header: list[str] | None = None
    for i, line in enumerate(lines):
        if fence is not None:
            if _closes(line, fence):
                fence = None
            elif keep_fenced and not _RULE_LINE.match(line):
                builder.add(line)
            continue
        if in_options:
            if _MYST_OPTION.match(line):
                continue
            in_options = False
        if directives and _closes(line, directives[-1]):
            directives.pop()
            continue
        fence_match = _FENCE.match(line)
        colon = None if fence_match else _COLON_FENCE.match(line)
        if fence_match or colon:
            if fence_match:
                marker = fence_match.group(1) or fence_match.group(4)
                name, argument = fence_match.group(2), fence_match.group(3) or ""
            else:
                marker, name, argument = colon.group(1), colon.group(2) or colon.group(3), colon.group(4)
                if not name:
                    if directives and directives[-1][0] == ":":
                        directives.pop()
                    continue  # a bare ::: closes a colon fence
            if fence_match and (name is None or name.lower() in _CODE_DIRECTIVES):
                fence, keep_fenced = marker, True  # the fence lines are markup; the code is kept
            elif name.lower() in _DROP_DIRECTIVES:
                fence, keep_fenced = marker, False  # a toctree, an image: no prose inside
            else:
                # An admonition, tab or dropdown: its title is a label, its body Markdown like the page.
                directives.append(marker)
                in_options = True
                if argument and not _PATH_LIKE.search(argument):
                    builder.add(_md_inline(argument))
            continue
        if _MYST_TARGET.match(line) or _MYST_COMMENT.match(line) or _MDX_STATEMENT.match(line):
            continue
        line = _BLOCKQUOTE.sub("", line)  # a quote's text is prose like any other
        if tag_open:
            tag_open = ">" not in line
            line = line.split(">", 1)[1].lstrip() if ">" in line else ""
            if not line.strip():
                continue
        if _OPEN_TAG.search(line):
            tag_open = True  # the tag ends on a later line; its attributes are markup
            line = _OPEN_TAG.sub("", line)
        if _RULE_LINE.match(line):
            continue  # a thematic break or a drawn table border
        atx = _ATX.match(line)
        if atx:
            title = _md_inline(atx.group(2)).strip()
            if title:
                builder.heading(len(atx.group(1)), title, atx.group(4))
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.match(r"^(=+|-+)\s*$", nxt) and not line.startswith((" ", "-", "*", ">", "|")):
            builder.heading(1 if nxt.strip()[0] == "=" else 2, _md_inline(line).strip())
            continue
        if re.match(r"^(=+|-+)\s*$", line) and i > 0 and lines[i - 1].strip():
            continue  # setext underline already taken as a heading
        footnote = _MD_FOOTNOTE_DEF.match(line)
        if footnote:
            builder.add(_md_inline(footnote.group(1)))
            continue
        if _MD_LINK_DEF.match(line):
            continue
        tab = _CONTENT_TAB.match(line)
        if tab:
            builder.add(_md_inline(tab.group(1)))
            continue
        admonition = _ADMONITION.match(line)
        if admonition:
            builder.add(admonition.group(3) or admonition.group(2).capitalize())
            continue
        if table_header is not None:
            if "|" in line:
                builder.extend(labelled_rows(table_header, [_md_cells(line)]), paragraphs=True)
                continue
            table_header = None
        if "|" in line and _MD_TABLE_DELIMITER.match(nxt):
            table_header = _md_cells(line)
            continue
        if _MD_TABLE_DELIMITER.match(line):
            continue  # a table's delimiter row with no header
        builder.add(_md_inline(line))
    builder.close()
    title = builder.title or title_from_path(source)
    for section in builder.sections:
        if not section.trail:
            section.trail = [title]
    return ParsedDocument(
        source,
        title,
        "markdown",
        builder.sections,
        {k: v for k, v in meta.items() if isinstance(v, str | int | float)},
    )
