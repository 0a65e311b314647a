"""What Sphinx markup means wherever it is written, in reStructuredText or in MyST Markdown: the directives
whose body is no prose, and the words a role shows."""

from __future__ import annotations

import re

# Directives whose body is navigation or machinery, not prose: dropped with their content.
DROP_DIRECTIVES = {
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


def role_words(match: re.Match[str]) -> str:
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
