"""E-mail messages (the standard library): the body and text attachments as sections, kept in memory."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from ingest.decode import decode_text
from ingest.document import (
    ExtractionFailed,
    ParsedDocument,
    Section,
    clean_text,
    title_from_path,
)
from ingest.parsers.html import parse_html

MAX_EMAIL_PARTS = 1000
_TEXT_ATTACHMENTS = {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "text/html"}


def parse_eml(source: str, raw: bytes) -> ParsedDocument:
    """The message body (plain text, or HTML reduced to text) under its subject, and text attachments as
    sections of their own. Attachments are read in memory and never written: their names are only shown."""
    import email
    from email import policy
    from email.message import EmailMessage

    try:
        message = email.message_from_bytes(raw, policy=policy.default)
        if sum(1 for _ in message.walk()) > MAX_EMAIL_PARTS:
            raise ExtractionFailed(f"e-mail with more than {MAX_EMAIL_PARTS} parts: refused")
        subject = clean_text(str(message.get("subject") or ""))
        title = subject or title_from_path(source)
        header = "; ".join(
            f"{name}: {clean_text(str(message.get(name)))}"
            for name in ("From", "To", "Date")
            if message.get(name)
        )
        sections: list[Section] = []
        body_part = message.get_body(preferencelist=("plain", "html"))
        body = _part_text(body_part) if body_part is not None else ""
        sections.append(Section([title], "", "\n\n".join(p for p in (header, body) if p)))
        listed: list[str] = []
        for part in message.iter_attachments():
            # The name is only ever displayed: '../../x' stays a label, never a path.
            name = PurePosixPath((part.get_filename() or "").replace("\\", "/")).name or "attachment"
            if part.get_content_type() in _TEXT_ATTACHMENTS and isinstance(part, EmailMessage):
                text = _part_text(part)
                if text:
                    sections.append(Section([title, f"Attachment: {name}"], "", text))
                    continue
            listed.append(f"{name} ({part.get_content_type()})")
        if listed:
            sections.append(
                Section([title, "Attachments"], "", "Attachments not indexed: " + ", ".join(listed))
            )
    except ExtractionFailed:
        raise
    except (LookupError, ValueError, TypeError, AttributeError, UnicodeError) as exc:
        raise ExtractionFailed(f"corrupt e-mail: {type(exc).__name__}: {exc}") from exc
    return ParsedDocument(source, title, "eml", [s for s in sections if s.text.strip()], {"subject": subject})


def _part_text(part: Any) -> str:
    content = part.get_content()
    if isinstance(content, bytes):
        content = decode_text(content)[0]
    if not isinstance(content, str):
        return ""
    if part.get_content_type() == "text/html":
        document = parse_html("message.html", content)
        return "\n\n".join(section.text for section in document.sections)
    return content.strip()
