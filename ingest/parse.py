"""Doc-folder parsers: reStructuredText (Sphinx), Markdown (Hugo, MkDocs) and plain text into sections.

Each section keeps its heading trail and the anchor a doc generator would give it; markup noise (roles,
directive options, shortcodes, link targets) is dropped and the text inside it kept. No chunking here.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
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


DOC_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".rst": "rst", ".txt": "text"}


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
        title = _title_from_path(source)
        return ParsedDocument(source, title, "text", [Section([title], "", text.strip())])
    raise UnsupportedFile(f"{source}: unsupported file type {suffix or '(none)'!r}")


def _title_from_path(source: str) -> str:
    stem = PurePosixPath(source).stem
    if stem in ("index", "README", "readme", "_index"):
        parent = PurePosixPath(source).parent.name
        stem = parent or stem
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or source


class _SectionBuilder:
    """Collects lines under the current heading trail and closes a section at each new heading."""

    def __init__(self, title: str | None) -> None:
        self.title = title
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
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(self.lines)).strip()
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
_FOOTNOTE_REF = re.compile(r"\s?\[(#|\*|\d+|#\w+)\]_")
_SUBSTITUTION = re.compile(r"\|([^|\s][^|]*?)\|_?")

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


def _rst_inline(text: str) -> str:
    def role(match: re.Match[str]) -> str:
        name, target = match.group(1), match.group(2).lstrip("~!")
        if name in ("doc", "ref", "numref", "download", "any", "std:doc", "std:ref"):
            target = target.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ")
        elif name.startswith(("py:", "func", "class", "meth", "mod", "attr", "obj", "data", "exc")):
            target = target.rsplit(".", 1)[-1] if name in ("class", "meth", "func", "attr") else target
        return target

    text = _ROLE_WITH_TITLE.sub(r"\1", text)
    text = _ROLE.sub(role, text)
    text = _LINK_WITH_TITLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK_REF.sub(r"\1", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    text = _SUBSTITUTION.sub(r"\1", text)
    return text


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def parse_rst(source: str, text: str) -> ParsedDocument:
    lines = text.expandtabs(4).splitlines()
    styles: list[tuple[str, bool]] = []
    builder = _SectionBuilder(None)
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
            else:
                if argument.strip() and name not in ("code-block", "code", "sourcecode", "math", "figure"):
                    builder.add(" " * indent + _rst_inline(argument.strip()))
                in_directive_options = True
            i += 1
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
    title = builder.title or _title_from_path(source)
    for section in builder.sections:
        if not section.trail:
            section.trail = [title]
    return ParsedDocument(source, title, "rst", builder.sections)


# ---------------------------------------------------------------------------------------------------
# Markdown

_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*(\{#([\w-]+)[^}]*\})?\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SHORTCODE = re.compile(r"\{\{[<%]\s*/?\s*([\w/-]+)?[^}]*?[%>]\}\}")
_SHORTCODE_TEXT_ARGS = re.compile(r'\b(?:title|caption|alt|text)\s*=\s*"([^"]*)"')
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^)]*\))*\)")
_MD_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_MD_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+\S+")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>\n]*>")
_ADMONITION = re.compile(r'^(\s*)(?:!!!|\?\?\?\+?)\s*([\w-]+)(?:\s+"([^"]*)")?\s*$')
_MD_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(\S(?:.*?\S)?)\1")
_MD_CODE = re.compile(r"`([^`]+)`")
_ATTR_LIST = re.compile(r"\{:?\s*[#.][^}]*\}")


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
        return " ".join(_SHORTCODE_TEXT_ARGS.findall(match.group(0)))

    text = _SHORTCODE.sub(shortcode, text)
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_REF_LINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = _ATTR_LIST.sub("", text)
    text = _MD_CODE.sub(r"\1", text)
    text = _MD_EMPHASIS.sub(r"\2", text)
    return text


def parse_markdown(source: str, text: str) -> ParsedDocument:
    meta, body = _front_matter(text.replace("\r\n", "\n"))
    body = _HTML_COMMENT.sub("", body)
    meta_title = meta.get("title") or meta.get("linkTitle")
    builder = _SectionBuilder(str(meta_title).strip() if meta_title else None)
    lines = body.splitlines()
    fence: str | None = None
    for i, line in enumerate(lines):
        if fence is not None:
            builder.add(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        fence_match = _FENCE.match(line)
        if fence_match:
            fence = fence_match.group(1)
            builder.add(line)
            continue
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
        if _MD_LINK_DEF.match(line):
            continue
        admonition = _ADMONITION.match(line)
        if admonition:
            builder.add(admonition.group(3) or admonition.group(2).capitalize())
            continue
        if re.match(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$", line):
            continue  # table delimiter row
        builder.add(_md_inline(line))
    builder.close()
    title = builder.title or _title_from_path(source)
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
