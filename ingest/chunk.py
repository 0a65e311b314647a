"""Section-aware chunking sized in the embedding model's own tokens.

A chunk never crosses a section boundary and, with its heading trail prepended, never exceeds the model's
maximum sequence length (text past it would be silently dropped by the model).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from indexes.payload import FENCE_LINE, embed_text
from ingest.document import ParsedDocument, fence_after

CHUNKING_VERSION = "sections-2"
# Special tokens ([CLS], [SEP]) that every encoded text carries.
SPECIAL_TOKENS = 2

TokenCounter = Callable[[list[str]], list[int]]
_LABEL = re.compile(r"(?P<version>[\w.-]+)/(?P<size>\d+)/(?P<overlap>\d+)")


@dataclass(frozen=True)
class ChunkingParams:
    max_tokens: int
    target_tokens: int = 0  # 0: fill up to max_tokens
    overlap_tokens: int = 32

    @property
    def size(self) -> int:
        return min(self.target_tokens or self.max_tokens, self.max_tokens)

    def label(self) -> str:
        """How a collection records its chunking: version, size and overlap ('sections-2/256/32')."""
        return f"{CHUNKING_VERSION}/{self.size}/{self.overlap_tokens}"

    @classmethod
    def from_label(cls, label: str) -> ChunkingParams:
        """The parameters a `label` records; ValueError when this ragsvc does not chunk that way."""
        found = _LABEL.fullmatch(label)
        if found is None:
            raise ValueError(f"unknown chunking {label!r}")
        if found["version"] != CHUNKING_VERSION:
            raise ValueError(
                f"chunked by {found['version']}, this ragsvc chunks by {CHUNKING_VERSION}: ingest its "
                "documents into a new collection"
            )
        return cls(max_tokens=int(found["size"]), overlap_tokens=int(found["overlap"]))


@dataclass(frozen=True)
class Chunk:
    source: str
    title: str
    section_trail: list[str]
    anchor: str
    position: int
    text: str
    tokens: int

    @property
    def heading(self) -> str:
        return " > ".join(self.section_trail)

    @property
    def embed_text(self) -> str:
        """What the model reads: the heading trail, then the chunk (as reindex reads it back from the payload)."""
        return embed_text(self.section_trail, self.text)

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.embed_text.encode()).hexdigest()[:16]


_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n")


def _paragraphs(text: str) -> list[str]:
    """Blank-line paragraphs; a fenced code block with blank lines inside stays one paragraph, and one with the
    line that leads into it ("Add the following to settings.py:"), which alone would be a chunk of no use."""
    paragraphs: list[str] = []
    marker = None
    for paragraph in re.split(r"\n\s*\n", text):
        if not paragraph.strip():
            continue
        leads_in = bool(paragraphs) and paragraphs[-1].rstrip().endswith(":")
        if marker is not None or (leads_in and FENCE_LINE.match(paragraph)):
            paragraphs[-1] += "\n\n" + paragraph.strip("\n")
        else:
            paragraphs.append(paragraph.strip("\n"))
        marker = fence_after(paragraph, marker)
    return paragraphs


def _code_pieces(paragraph: str, budget: int, count: TokenCounter) -> list[tuple[str, int]]:
    """A paragraph with code too long for one chunk, cut between lines; a piece cut inside a code block closes
    its fence and the next one opens it again, so that every chunk's code reads as code."""
    lines = paragraph.split("\n")
    sizes = [t - SPECIAL_TOKENS for t in count(lines)]
    pieces: list[tuple[str, int]] = []
    current: list[str] = []
    used = 0
    marker: str | None = None  # the fence open after the lines so far, and the line that opened it
    opener, opener_size = "", 0

    def close_piece() -> None:
        nonlocal current, used
        closing = [marker] if marker else []
        if marker is not None and len(current) > 1 and current[-1] == opener:
            current, closing = current[:-1], []  # a fence just opened goes on with its code in the next piece
        if any(line != opener for line in current):
            text = "\n".join([*current, *closing])
            pieces.append((text, count([text])[0] - SPECIAL_TOKENS))
        current, used = ([opener], opener_size) if marker else ([], 0)

    for line, size in zip(lines, sizes, strict=True):
        reserve = 2 * opener_size if marker else 0  # the fence opened again and closed, at most
        if size + reserve > budget:  # one line longer than a chunk (minified code): cut by words
            close_piece()
            for window, tokens in _token_windows(line, budget - reserve, count):
                pieces.append(
                    (f"{opener}\n{window}\n{marker}", tokens + reserve) if marker else (window, tokens)
                )
            continue
        if used + size + reserve // 2 > budget:
            close_piece()
        current.append(line)
        used += size
        after = fence_after(line, marker)
        if marker is None and after is not None:
            opener, opener_size = line, size
        marker = after
    close_piece()
    return pieces


def _split_to_fit(text: str, budget: int, count: TokenCounter) -> list[tuple[str, int]]:
    """Paragraphs, and where a paragraph is too long its sentences or lines, each with its token count."""
    paragraphs = _paragraphs(text)
    units: list[tuple[str, int]] = []
    counts = count(paragraphs) if paragraphs else []
    for paragraph, tokens in zip(paragraphs, counts, strict=True):
        tokens -= SPECIAL_TOKENS
        if tokens <= budget:
            units.append((paragraph, tokens))
            continue
        if any(FENCE_LINE.match(line) for line in paragraph.split("\n")):
            units.extend(_code_pieces(paragraph, budget, count))
            continue
        pieces = [p for p in _SENTENCE_END.split(paragraph) if p.strip()]
        for piece, piece_tokens in zip(pieces, count(pieces), strict=True):
            piece_tokens -= SPECIAL_TOKENS
            if piece_tokens <= budget:
                units.append((piece, piece_tokens))
            else:
                units.extend(_token_windows(piece, budget, count))
    return units


def _token_windows(text: str, budget: int, count: TokenCounter) -> list[tuple[str, int]]:
    """A text too long for one chunk even as a sentence, cut on word boundaries into budget-sized pieces."""
    words = text.split()
    pieces: list[tuple[str, int]] = []
    start = 0
    while start < len(words):
        # Binary search for the longest run of words that fits.
        low, high = start + 1, len(words)
        while low < high:
            mid = (low + high + 1) // 2
            if count([" ".join(words[start:mid])])[0] - SPECIAL_TOKENS <= budget:
                low = mid
            else:
                high = mid - 1
        piece = " ".join(words[start:low])
        tokens = count([piece])[0] - SPECIAL_TOKENS
        if tokens > budget:
            # One "word" longer than a chunk (a drawn table border, a hash, minified code): cut it.
            pieces.extend(_character_windows(piece, budget, count))
        else:
            pieces.append((piece, tokens))
        start = low
    return pieces


def _character_windows(word: str, budget: int, count: TokenCounter) -> list[tuple[str, int]]:
    pieces: list[tuple[str, int]] = []
    while word:
        low, high = 1, len(word)
        while low < high:
            mid = (low + high + 1) // 2
            if count([word[:mid]])[0] - SPECIAL_TOKENS <= budget:
                low = mid
            else:
                high = mid - 1
        pieces.append((word[:low], count([word[:low]])[0] - SPECIAL_TOKENS))
        word = word[low:]
    return pieces


def chunk_document(document: ParsedDocument, params: ChunkingParams, count: TokenCounter) -> list[Chunk]:
    chunks: list[Chunk] = []
    for section in document.sections:
        trail = section.trail
        heading_tokens = count([" > ".join(trail) + "\n\n"])[0] - SPECIAL_TOKENS
        while heading_tokens > params.size // 3 and len(trail) > 1:
            trail = trail[1:]  # a very deep trail keeps its nearest headings
            heading_tokens = count([" > ".join(trail) + "\n\n"])[0] - SPECIAL_TOKENS
        budget = max(params.size - SPECIAL_TOKENS - heading_tokens, 16)
        units = _split_to_fit(section.text, budget, count)
        current: list[tuple[str, int]] = []

        def emit(
            parts: list[tuple[str, int]],
            trail: list[str] = trail,
            anchor: str = section.anchor,
            overhead: int = heading_tokens + SPECIAL_TOKENS,
        ) -> None:
            text = "\n\n".join(p for p, _ in parts)
            tokens = sum(t for _, t in parts) + overhead
            chunks.append(
                Chunk(document.source, document.title, list(trail), anchor, len(chunks), text, tokens)
            )

        for unit in units:
            if current and sum(t for _, t in current) + unit[1] > budget:
                emit(current)
                carried: list[tuple[str, int]] = []
                for part in reversed(current):
                    if sum(t for _, t in carried) + part[1] > params.overlap_tokens:
                        break
                    carried.insert(0, part)
                current = carried if sum(t for _, t in carried) + unit[1] <= budget else []
            current.append(unit)
        if current:
            emit(current)
    return _enforce_limit(chunks, params, count)


def _enforce_limit(chunks: list[Chunk], params: ChunkingParams, count: TokenCounter) -> list[Chunk]:
    """Measure every chunk as the model will read it; cut any that joining made too long."""
    if not chunks:
        return chunks
    actual = count([c.embed_text for c in chunks])
    fitted: list[Chunk] = []
    for chunk, tokens in zip(chunks, actual, strict=True):
        if tokens <= params.max_tokens:
            fitted.append(Chunk(**{**chunk.__dict__, "tokens": tokens}))
            continue
        heading_tokens = tokens - (count([chunk.text])[0] - SPECIAL_TOKENS)
        for piece, _ in _token_windows(chunk.text, params.max_tokens - heading_tokens - 1, count):
            fitted.append(Chunk(**{**chunk.__dict__, "text": piece, "tokens": 0}))
    if any(c.tokens == 0 for c in fitted):
        fitted = [Chunk(**{**c.__dict__, "position": i}) for i, c in enumerate(fitted)]
        measured = count([c.embed_text for c in fitted])
        fitted = [Chunk(**{**c.__dict__, "tokens": t}) for c, t in zip(fitted, measured, strict=True)]
    return fitted
