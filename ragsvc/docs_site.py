"""A folder of Markdown and reStructuredText docs served as HTML pages (RAGSVC_DOCS_SITE_DIR, at /site/), so that
the citations of a collection ingested from that folder with `--docs-base-url http://HOST/site` open the cited
section: pages sit where ingest's links point (ingest.pipeline.page_path) and headings carry the ids its
anchors name (ingest.document.slugify). Rendering is markdown-it-py's and docutils'; nothing here ingests.
"""

from __future__ import annotations

import html
import posixpath
import re
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from docutils import nodes
from docutils.core import publish_parts
from docutils.parsers.rst import roles
from docutils.writers.html5_polyglot import Writer as Html5Writer
from markdown_it import MarkdownIt
from markdown_it.token import Token

from indexes.errors import RagsvcError
from ingest.document import slugify, title_from_path
from ingest.extract import FORMATS
from ingest.pipeline import page_path

SITE_PREFIX = "/site"
RENDERED = ("markdown", "rst", "text")
_EXPLICIT_ID = re.compile(r"\s*\{#([\w-]+)[^}]*\}\s*$")
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)
_ROLE_TARGET = re.compile(r"^(.*?)\s*<([^<>]+)>$", re.S)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 16px/1.6 system-ui, sans-serif; max-width: 50rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
pre {{ background: #f4f4f4; padding: .75rem; overflow-x: auto; }}
code {{ background: #f4f4f4; padding: 0 .2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .25rem .5rem; }}
:target {{ background: #fff3b0; }}
nav {{ font-size: .9rem; margin-bottom: 1rem; }}
</style></head>
<body><nav><a href="{root}">{site_title}</a> / {source}</nav>
<main>
{body}
</main></body></html>
"""


class PageNotFound(RagsvcError):
    code = "page_not_found"


@dataclass(frozen=True)
class DocsPage:
    title: str
    html: str


class DocsSite:
    """The pages of one folder, by the path ingest's links give them; each rendered once per file version."""

    def __init__(self, folder: Path, prefix: str = SITE_PREFIX) -> None:
        self.folder = folder.resolve()
        self.root = prefix.rstrip("/") + "/"
        self._cache: dict[str, tuple[float, DocsPage]] = {}
        self._lock = threading.Lock()

    def sources(self) -> dict[str, str]:
        """Page path (as in a citation's link) -> the file's path in the folder, for every page it renders."""
        found: dict[str, str] = {}
        for path in sorted(self.folder.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            source = path.relative_to(self.folder).as_posix()
            if any(part.startswith(".") for part in PurePosixPath(source).parts):
                continue
            kind = FORMATS.get(path.suffix.lower())
            if kind is not None and kind.name in RENDERED:
                found.setdefault(page_path(source, kind.name), source)
        return found

    def page(self, path: str) -> DocsPage:
        """The rendered page at `path` (relative to the site's root, as in links); PageNotFound otherwise."""
        source = self.sources().get(path) or self.sources().get(path.rstrip("/") + "/")
        if source is None:
            raise PageNotFound(f"no page {path!r} in the docs site")
        file = self.folder / source
        version = file.stat().st_mtime
        with self._lock:
            cached = self._cache.get(source)
        if cached is not None and cached[0] == version:
            return cached[1]
        rendered = self._render(source, file.read_text(encoding="utf-8", errors="replace"))
        with self._lock:
            self._cache[source] = (version, rendered)
        return rendered

    def url_of(self, from_source: str, target: str) -> str | None:
        """The site URL of a doc file that `from_source` links to (a relative path, maybe without suffix)."""
        target, _, fragment = target.partition("#")
        if "://" in target or target.startswith("mailto:"):
            return None
        # A path from the folder's root when it starts with "/" (as Sphinx's :doc: takes it), else from the page's.
        base = "" if target.startswith("/") else posixpath.dirname(from_source)
        joined = posixpath.normpath(posixpath.join(base, target.lstrip("/"))) if target else from_source
        sources = {v: k for k, v in self.sources().items()}
        candidates = [joined] + [joined + suffix for suffix in (".md", ".rst", ".txt")]
        for candidate in candidates:
            if candidate in sources:
                return self.root + sources[candidate] + (f"#{fragment}" if fragment else "")
        return None

    def _render(self, source: str, text: str) -> DocsPage:
        kind = FORMATS[PurePosixPath(source).suffix.lower()].name
        if kind == "markdown":
            title, body = _markdown(self, source, text)
        elif kind == "rst":
            title, body = _rst(self, source, text)
        else:
            title, body = None, f"<pre>{html.escape(text)}</pre>"
        title = title or title_from_path(source)
        page = PAGE.format(
            title=html.escape(title),
            root=html.escape(self.root),
            site_title="Docs",
            source=html.escape(source),
            body=body,
        )
        return DocsPage(title=title, html=page)


def _inline_text(token: Token) -> str:
    return "".join(child.content for child in token.children or [] if child.type in ("text", "code_inline"))


def _markdown(site: DocsSite, source: str, text: str) -> tuple[str | None, str]:
    text = _FRONT_MATTER.sub("", text)
    md = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    tokens = md.parse(text)
    title = None
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            inline = tokens[i + 1]
            explicit = _EXPLICIT_ID.search(inline.content)
            if explicit:
                inline.content = inline.content[: explicit.start()]
                for child in inline.children or []:
                    if child.type == "text":
                        child.content = _EXPLICIT_ID.sub("", child.content)
            plain = _inline_text(inline)
            token.attrSet("id", explicit.group(1) if explicit else slugify(plain))
            if title is None and token.tag == "h1":
                title = plain
        for child in token.children or []:
            if child.type == "link_open":
                href = str(child.attrGet("href") or "")
                url = site.url_of(source, href) if _is_doc_link(href) else None
                if url:
                    child.attrSet("href", url)
    return title, md.renderer.render(tokens, md.options, {})


def _is_doc_link(href: str) -> bool:
    path = href.partition("#")[0]
    return bool(path) and "://" not in path and PurePosixPath(path).suffix.lower() in (".md", ".rst", ".txt")


def _doc_role(
    name: str,
    rawtext: str,
    text: str,
    lineno: int,
    inliner: object,
    options: dict[str, object] | None = None,
    content: list[str] | None = None,
) -> tuple[list[nodes.Node], list[nodes.system_message]]:
    """Sphinx's :doc:`title <path>` as a link to that page of the site."""
    found = _ROLE_TARGET.match(text)
    label, target = (found.group(1), found.group(2)) if found else (text, text)
    settings = inliner.document.settings  # type: ignore[attr-defined]
    site: DocsSite | None = getattr(settings, "ragsvc_site", None)
    source: str = getattr(settings, "ragsvc_source", "")
    url = site.url_of(source, target) if site else None
    if url is None:
        return [nodes.literal(rawtext, label)], []
    return [nodes.reference(rawtext, label, refuri=url)], []


roles.register_local_role("doc", _doc_role)


def _rst(site: DocsSite, source: str, text: str) -> tuple[str | None, str]:
    parts = publish_parts(
        source=text,
        source_path=source,
        writer=Html5Writer(),
        settings_overrides={
            # Sphinx's own roles and directives are not docutils': keep their text, report nothing.
            "report_level": 5,
            "halt_level": 5,
            "syntax_highlight": "none",
            "file_insertion_enabled": False,
            "raw_enabled": False,
            "ragsvc_site": site,
            "ragsvc_source": source,
        },
    )
    return parts["title"] or None, parts["html_title"] + parts["body"]
