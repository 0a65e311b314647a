"""Find a canary's bytes anywhere under a folder: raw, in UTF-16 and base64, and inside whatever is compressed
(gzip, bz2, xz, zstd and LZ4 frames, zlib streams, zip members, and the LZ4 blocks of Qdrant's payload and
sparse-vector pages, which carry no magic number)."""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import struct
import zipfile
import zlib
from pathlib import Path

import lz4.block
import lz4.frame
import zstandard

# Qdrant's gridstore writes each value LZ4-compressed (size prepended) at the start of a block of this size.
GRIDSTORE_BLOCK = 128
MAX_VALUE = 1 << 20


def needles(canary: str) -> list[bytes]:
    raw = canary.encode()
    found = [raw, canary.encode("utf-16-le"), canary.encode("utf-16-be")]
    for shift in range(3):
        # base64 of the canary at each of the three alignments it can have inside a longer text
        encoded = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0 :]
        found.append(encoded[: len(encoded) - 4])
    return found


def _expanded(data: bytes) -> list[bytes]:
    """`data` and what it decompresses to, for each container recognised by its magic number."""
    out = [data]
    openers = [
        (b"\x1f\x8b", gzip.decompress),
        (b"BZh", bz2.decompress),
        (b"\xfd7zXZ", lzma.decompress),
        (b"\x28\xb5\x2f\xfd", lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d)),
        (b"\x04\x22\x4d\x18", lz4.frame.decompress),
    ]
    for magic, opener in openers:
        if data.startswith(magic):
            try:
                out.append(opener(data))
            except Exception:  # not really that format: the raw bytes are scanned all the same
                pass
    if data[:1] == b"\x78" and data[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
        try:
            out.append(zlib.decompress(data))
        except zlib.error:
            pass
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                out.extend(archive.read(name) for name in archive.namelist())
        except zipfile.BadZipFile:
            pass
    return out


def _is_lz4_gridstore(page: Path) -> bool:
    try:
        return json.loads((page.parent / "config.json").read_text()).get("compression") == "LZ4"
    except (OSError, ValueError):
        return False


def _gridstore_values(data: bytes) -> list[bytes]:
    """Every LZ4 value that starts at a block boundary of a gridstore page, deleted ones included."""
    values = []
    for offset in range(0, len(data) - 4, GRIDSTORE_BLOCK):
        size = struct.unpack_from("<I", data, offset)[0]
        if not 0 < size <= MAX_VALUE:
            continue
        # the compressed length is not stored with the value: the shortest input that decodes is it
        for length in range(1, min(size + size // 255 + 16, len(data) - offset - 4) + 1):
            try:
                values.append(lz4.block.decompress(data[offset : offset + 4 + length]))
                break
            except lz4.block.LZ4BlockError:
                continue
    return values


def find_canary(root: Path, canary: str) -> list[str]:
    """The files under `root` (relative paths) that hold the canary in any of the forms above."""
    wanted = needles(canary)
    hits = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        layers = _expanded(data)
        if path.name.startswith("page_") and _is_lz4_gridstore(path):
            layers += _gridstore_values(data)
        if any(needle in layer for layer in layers for needle in wanted):
            hits.append(str(path.relative_to(root)))
    return hits
