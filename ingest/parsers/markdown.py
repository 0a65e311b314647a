"""Markdown (CommonMark, GitHub, Hugo, MkDocs, MyST, Docusaurus) into headed sections: each keeps its heading
trail and the anchor the generator gives it; front matter, shortcodes, admonitions, tabs and link targets are
dropped and the text inside them kept; code stays fenced; a table row becomes one "column: value; ..." line."""

from __future__ import annotations

import html
import re
import tomllib

import yaml

from ingest.document import (
    ParsedDocument,
    SectionBuilder,
    closes_fence,
    code_fence,
    labelled_rows,
    title_from_path,
)
from ingest.parsers.sphinx import DROP_DIRECTIVES, role_words

# An ATX heading and its id, {#anchor} or MkDocs' { #anchor } (the attribute list the page's links point at).
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*(\{:?\s*#([\w-]+)[^}]*\})?\s*$")
# A code fence, or a MyST directive fence (```{note}, ```{code-block} python) with its argument.
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(?:\{([\w:-]+)\}\s*(.*?))?\s*$|^\s*(`{3,}|~{3,})")
# A colon fence: MyST (:::{note}) or Docusaurus (:::tip Title); a bare ::: closes one.
# A PyMdown Extensions block (MkDocs Material, FastAPI's docs): /// tip | Title, its body Markdown, closed by ///.
_SLASH_BLOCK = re.compile(r"^\s*(/{3,})\s*([\w-]+)?\s*(?:\|\s*(.*?))?\s*$")
# A snippet include, {* ../../docs_src/app.py hl[3:5] *}: a file outside the page, its path is no prose.
_CODE_INCLUDE = re.compile(r"^\s*\{\*.*\*\}\s*$")
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
# A link whose text the author wrapped onto the next line ([custom load\npolicy](https://...)), which the
# line-at-a-time reading below would leave as "policy](https://...)": its text is freed first, line break kept.
# The target has no spaces, so a wrapped C++ lambda capture ([&a,\n &b](bool ok)) is not taken for one.
_WRAPPED_LINK = re.compile(
    r"(?<![!\\\w])\[([^\[\]]*?\n[^\[\]]*?)\](?:\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"\n]*\")?\)|\[[^\]\n]*\])"
)
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
# A raw <script> or <style> block (VitePress pages set up their components in one): code the reader never sees.
_RAW_BLOCK = re.compile(r"^\s{0,3}<(script|style)(?=[\s>]|$)", re.I)
# !!! note "Title", ??? tip, !!! info inline end "Title" (MkDocs Material modifiers before the title).
_ADMONITION = re.compile(r'^(\s*)(?:!!!|\?\?\?\+?)\s*([\w-]+)(?:\s+(?:inline|end))*(?:\s+"([^"]*)")?\s*$')
_MD_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_CONTENT_TAB = re.compile(r'^\s*===\+?\s+"([^"]*)"\s*$')  # MkDocs (pymdownx.tabbed) tab label
# Emphasis; underscores only at word edges, as CommonMark reads them, so snake_case names keep theirs.
_MD_EMPHASIS = re.compile(r"(\*\*|\*)(\S(?:.*?\S)?)\1|(?<![\w\\])(__|_)([^\s_](?:[^_]*?[^\s_])?)\3(?!\w)")
# <abbr title="Server Name Indication">SNI</abbr>: the short form and what it stands for, both words a reader
# may ask with.
_ABBR = re.compile(r"""<(abbr|dfn)\s[^>]*?title=(["'])(.*?)\2[^>]*>(.*?)</\1>""", re.S)
_MD_CODE = re.compile(r"(?<!\\)`([^`]+)`")
# A backslash escape, \< or \*: the character itself, never markup.
_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
# Where _md_inline holds a code span or an escaped character while it reads the markup around them.
_HELD = re.compile("\ue000(\\d+)\ue001")
# A character reference, &lt; &#124; &#x7C; (with its semicolon: "?a=1&not=2" is no reference).
_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
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


def _shortcode(match: re.Match[str]) -> str:
    labels = _SHORTCODE_TEXT_ARGS.findall(match.group(0))
    if (match.group(1) or "") not in ("ref", "relref", "param", "readfile", "include"):
        # A quoted positional argument is a label ({{< tab "macOS" >}}, {{% expand "Details" %}}),
        # unless it is a path or an address.
        labels += [a for a in _SHORTCODE_POSITIONAL.findall(match.group(0)) if not _PATH_LIKE.search(a)]
    words = " ".join(labels)
    return f"{words} " if words else ""


def _shortcode_in_page(match: re.Match[str]) -> str:
    # {{</* name */>}} is how a page shows a shortcode without running it: Hugo prints it as {{< name >}}.
    escaped = re.fullmatch(r"(\{\{[<%])/\*\s*(.*?)\s*\*/([%>]\}\})", match.group(0), re.S)
    return f"{escaped[1]} {escaped[2]} {escaped[3]}" if escaped else _shortcode(match)


def _unwrap_link(match: re.Match[str]) -> str:
    return match.group(0) if re.search(r"\n\s*\n", match.group(1)) else match.group(1)


def _md_inline(text: str) -> str:
    text = _MYST_ROLE.sub(role_words, text)
    # Code spans and escaped characters are literal (`<div>`, `List<String>`, \<name>): held aside while the
    # links, tags, entities and emphasis around them are read.
    held: list[str] = []

    def hold(match: re.Match[str]) -> str:
        held.append(match.group(1))
        return f"\ue000{len(held) - 1}\ue001"

    text = _MD_ESCAPE.sub(hold, _MD_CODE.sub(hold, text))
    text = _MD_IMAGE.sub(r"\1", text)
    text = _MD_IMAGE_REF.sub(r"\1", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_REF_LINK.sub(r"\1", text)
    text = _MD_FOOTNOTE_REF.sub("", text)
    text = _MD_ALERT.sub(lambda m: m.group(1).capitalize(), text)
    text = _ABBR.sub(
        lambda m: f"{m.group(4)} ({m.group(3)})" if m.group(3) != m.group(4) else m.group(4), text
    )
    text = _MD_SHORTCUT_LINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = _ATTR_LIST.sub("", text)
    text = _MD_ICON.sub("", text)
    text = _ENTITY.sub(lambda m: html.unescape(m.group(0)), _emphasis(text))
    return _HELD.sub(lambda m: held[int(m.group(1))], text)


def _emphasis(text: str) -> str:
    return _MD_EMPHASIS.sub(lambda m: m.group(2) if m.group(2) is not None else m.group(4), text)


def _md_cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))
    return [_md_inline(cell.replace("\\|", "|")).strip() for cell in cells]


def parse_markdown(source: str, text: str) -> ParsedDocument:
    meta, body = _front_matter(text.replace("\r\n", "\n"))
    # Shortcodes first, over the whole page: Hugo runs them in code as well ({{< param version >}}), and one may
    # span lines (its arguments one a line) or sit in a link's address.
    body = _SHORTCODE.sub(_shortcode_in_page, _HTML_COMMENT.sub("", body))
    body = _WRAPPED_LINK.sub(_unwrap_link, body)
    meta_title = meta.get("title") or meta.get("linkTitle")
    builder = SectionBuilder(str(meta_title).strip() if meta_title else None)
    summary = meta.get("description") or meta.get("summary")
    if isinstance(summary, str) and summary.strip():
        # The page's own one-line summary (Hugo, Docsy, MkDocs): the author's words for what it answers.
        builder.add(_md_inline(_SHORTCODE.sub(_shortcode, summary.strip())))
        builder.add("")
    lines = body.splitlines()
    fence: str | None = None
    keep_fenced = True
    directives: list[str] = []  # open MyST/Docusaurus directive fences whose body is Markdown
    in_options = False
    tag_open = False
    raw_block: str | None = None  # the closing tag of the <script> or <style> block being skipped
    table_header: list[str] | None = None
    for i, line in enumerate(lines):
        if fence is not None:
            if closes_fence(line, fence):
                if keep_fenced:
                    builder.add(code_fence(fence))
                fence = None
            elif keep_fenced and not _RULE_LINE.match(line):
                builder.add(line)
            continue
        if raw_block is not None:
            raw_block = None if raw_block in line.lower() else raw_block
            continue
        if in_options:
            if _MYST_OPTION.match(line):
                continue
            in_options = False
        if directives and closes_fence(line, directives[-1]):
            directives.pop()
            continue
        slash = _SLASH_BLOCK.match(line)
        if slash:
            if slash.group(2):
                # An admonition, details or tab block: its title is a label, its body Markdown like the page.
                directives.append(slash.group(1))
                if slash.group(3):
                    builder.add(_md_inline(slash.group(3)))
            elif directives and directives[-1][0] == "/":
                directives.pop()
            continue
        if _CODE_INCLUDE.match(line):
            continue
        raw = _RAW_BLOCK.match(line)
        if raw:
            closing = f"</{raw.group(1).lower()}>"
            raw_block = None if closing in line.lower() else closing
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
                fence, keep_fenced = marker, True
                info = argument if name else line.strip()[len(marker) :]
                builder.add(code_fence(marker, info))
            elif name.lower() in DROP_DIRECTIVES:
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
    if fence is not None and keep_fenced:
        builder.add(code_fence(fence))  # a fence the page never closed ends with it
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
