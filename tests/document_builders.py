"""Documents built at test time with the libraries that write them (python-docx, python-pptx, pypdf,
email, zipfile), and the hostile ones (compression bombs, XML external entities) by hand."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from email.message import EmailMessage


def make_docx(blocks: list[tuple[str, str]], title: str | None = None) -> bytes:
    """blocks: ("h1".."h3" | "p" | "li", text) or ("table", "a,b;1,2")."""
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1:]))
        elif kind == "li":
            document.add_paragraph(text, style="List Bullet")
        elif kind == "table":
            rows = [row.split(",") for row in text.split(";")]
            table = document.add_table(rows=len(rows), cols=len(rows[0]))
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
        else:
            document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_pptx(slides: list[tuple[str, list[str], str]]) -> bytes:
    """slides: (title, bullet lines, speaker notes)."""
    from pptx import Presentation

    deck = Presentation()
    for title, lines, notes in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = lines[0]
        for line in lines[1:]:
            body.add_paragraph().text = line
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_pdf(
    pages: list[list[str]], title: str | None = None, bookmarks: list[tuple[str, int]] = ()
) -> bytes:
    """A PDF with a real text layer: each page's lines drawn in Helvetica; bookmarks as (title, page index)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    for heading, page_index in bookmarks:
        writer.add_outline_item(title=heading, page_number=page_index)
    if title:
        writer.add_metadata({"/Title": title})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


ODT_MIMETYPE = b"application/vnd.oasis.opendocument.text"
_ODT_CONTENT = """<?xml version="1.0" encoding="UTF-8"?>{doctype}
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
  xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
  xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" office:version="1.2">
<office:body><office:text>{body}</office:text></office:body></office:document-content>"""


def make_odt(body: str, doctype: str = "") -> bytes:
    """An OpenDocument text whose office:text holds `body` (text:h, text:p ... elements)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", ODT_MIMETYPE, compress_type=zipfile.ZIP_STORED)
        archive.writestr("content.xml", _ODT_CONTENT.format(doctype=doctype, body=body), zipfile.ZIP_DEFLATED)
        archive.writestr(
            "META-INF/manifest.xml",
            '<?xml version="1.0"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>',
        )
    return out.getvalue()


def make_eml(subject: str, body: str, attachments: list[tuple[str, bytes, str]] = ()) -> bytes:
    """attachments: (file name, content, MIME type)."""
    message = EmailMessage()
    message["From"] = "Ada <ada@example.org>"
    message["To"] = "ops@example.org"
    message["Subject"] = subject
    message.set_content(body)
    for name, content, mime in attachments:
        maintype, subtype = mime.split("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def with_dtd(
    package: bytes,
    secret_path: str,
    marker: str,
    part: str = "word/document.xml",
    root: str = "w:document",
) -> bytes:
    """The zip package (a DOCX by default) with an external entity declared in `part`, whose root element is
    `root`, and used where `marker` stood."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(package)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for member in source.infolist():
            data = source.read(member)
            if member.filename == part:
                text = data.decode()
                assert marker in text, f"{marker!r} is not in {part}"
                declaration_end = text.index("?>") + 2 if text.startswith("<?xml") else 0
                doctype = f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file://{secret_path}">]>'
                text = text[:declaration_end] + doctype + text[declaration_end:]
                data = text.replace(marker, "&xxe;").encode()
            target.writestr(member.filename, data)
    return out.getvalue()


def deflated_zeros(megabytes: int) -> bytes:
    """A raw deflate stream that inflates to `megabytes` MiB of zeros, about 1 KiB per MiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert again == block  # after a full flush the compressor starts afresh: blocks repeat exactly
    return block * megabytes + compressor.flush()


def raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip written by hand, so that it can lie: (name, deflated data, crc32, declared size)."""
    out = io.BytesIO()
    central = []
    for name, data, crc, size in members:
        offset = out.tell()
        encoded = name.encode()
        out.write(
            struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 33, crc, len(data), size, len(encoded), 0)
        )
        out.write(encoded + data)
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                8,
                0,
                33,
                crc,
                len(data),
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded
        )
    start = out.tell()
    for entry in central:
        out.write(entry)
    out.write(
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0)
    )
    return out.getvalue()


def zip_bomb_docx(docx_bytes: bytes, megabytes: int, declared: int | None = None) -> bytes:
    """The DOCX plus a part that inflates to `megabytes` MiB; its headers declare `declared` bytes (the
    truth when None: a zip that lies about its sizes otherwise)."""
    members = []
    with zipfile.ZipFile(io.BytesIO(docx_bytes)) as source:
        for member in source.infolist():
            data = source.read(member)
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            members.append(
                (member.filename, compressor.compress(data) + compressor.flush(), zlib.crc32(data), len(data))
            )
    true_size = megabytes << 20
    members.append(
        ("word/media/image1.png", deflated_zeros(megabytes), 0, true_size if declared is None else declared)
    )
    return raw_zip(members)
