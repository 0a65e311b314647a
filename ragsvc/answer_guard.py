"""A guard between the LLM and the reader that ends a reply once it starts repeating itself.

Fed the reply piece by piece (streamed or whole), it gives back what may be shown. A sentence that repeats an
earlier one (word for word, nearly, or mostly in phrases the reply said already) ends the reply between
sentences: before it, or after it when its opening was new and so already shown. A phrase
said over and over inside one sentence ends the reply after its first turn. Decisions fall at word
boundaries only, so the same reply gives the same text however it was split into pieces.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

# A sentence of fewer words is never called a repeat ("Yes.", "Done!", a heading).
MIN_WORDS = 3
# Two sentences this alike (share of matching words) say the same thing.
REPEAT_SIMILARITY = 0.85
# A sentence of at least RESAID_WORDS words, this share of whose word triples the reply said already, says
# again what was said (a loop in other words: "The package contains multiple packages, each one ...").
RESAID_SHARE = 0.6
RESAID_WORDS = 6
# A sentence that opens with the same words as an earlier one is held back until it ends, so that a repeat
# is cut before any of it is shown; other sentences are shown word by word.
OPENING_WORDS = 3
# Inside a sentence, a phrase of 3 to LOOP_PHRASE_WORDS words said twice in a row is a loop; a phrase of one
# or two words ("very very") is one only at SHORT_LOOP_TIMES turns.
LOOP_PHRASE_WORDS = 12
SHORT_LOOP_TIMES = 4

# A list number ("2.") does not end a sentence: the item it opens is part of it.
_SENTENCE_END = re.compile(r"(?<!\b\d)(?<!\b\d\d)[.!?][\"')\]`*]*\s+|\n\s*")
_CITATION = re.compile(r"\[\d+\]")
_AFTER_SPACE = re.compile(r"(?<=\s)(?=\S)")
_WORD = re.compile(r"[a-z0-9]+(?:['_.-][a-z0-9]+)*")


def _words(text: str) -> list[re.Match[str]]:
    """The words of a text, lowercased, citations left out, each with its place in the text."""
    blanked = _CITATION.sub(lambda m: " " * len(m.group(0)), text.lower())
    return list(_WORD.finditer(blanked))


def words_of(text: str) -> tuple[str, ...]:
    return tuple(m.group(0) for m in _words(text))


def _alike(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return a == b or SequenceMatcher(None, a, b, autojunk=False).ratio() >= REPEAT_SIMILARITY


def _unnumbered(words: tuple[str, ...]) -> tuple[str, ...]:
    """The words of a sentence without the list number ("2.") it may start with."""
    return words[1:] if words and words[0].isdigit() else words


def _triples(words: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {words[i : i + 3] for i in range(len(words) - 2)}


def _loop_start(words: tuple[str, ...]) -> int | None:
    """Where the second turn of a phrase begins, when the words end by saying it again and again."""
    for size in range(1, LOOP_PHRASE_WORDS + 1):
        times = SHORT_LOOP_TIMES if size < 3 else 2
        if len(words) < size * times:
            continue
        tail = words[-size:]
        if all(words[len(words) - size * (i + 1) : len(words) - size * i] == tail for i in range(times)):
            return len(words) - size * (times - 1)
    return None


def _echo_start(words: tuple[str, ...]) -> int:
    """Where the words begin to say again the phrase just before them (a loop in the making); len(words)
    when they do not. Those words are held back until the echo breaks off or becomes a loop."""
    start = len(words)
    for size in range(1, LOOP_PHRASE_WORDS + 1):
        echo = 0
        while (
            echo < len(words) - size and words[len(words) - 1 - echo] == words[len(words) - 1 - echo - size]
        ):
            echo += 1
        if echo:
            start = min(start, len(words) - echo)
    return start


class RepetitionGuard:
    """What of a reply may be shown; `stopped` once it repeated itself (the LLM call can end there)."""

    def __init__(self) -> None:
        self._reply = ""  # everything received
        self._shown = 0  # characters of the reply given back so far
        self._sentence_start = 0  # where the sentence being written begins
        self._said: list[tuple[str, ...]] = []  # the words of each finished sentence
        self._triples: set[tuple[str, ...]] = set()  # every word triple of the finished sentences
        self._in_code = False  # inside a ``` block, where lines alike (commands) are normal
        self.stopped = False

    @property
    def text(self) -> str:
        """The reply as it may be shown, so far."""
        return self._reply[: self._shown]

    def feed(self, piece: str) -> str:
        """Take the next piece of the reply; return the text that may be shown now (maybe empty)."""
        shown = ""
        # Word by word: decisions fall at the same places however the reply was split into pieces.
        for part in _AFTER_SPACE.split(piece):
            if self.stopped:
                break
            self._reply += part
            shown += self._advance(final=False)
        return shown

    def close(self) -> str:
        """The reply is complete: return what is left to show."""
        if self.stopped:
            return ""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        before = self._shown
        while not self.stopped:
            end = _SENTENCE_END.search(self._reply, self._sentence_start)
            if end is None:
                break
            if self._judge(self._reply[self._sentence_start : end.start() + 1]):
                self._sentence_start = self._shown = end.end()
        if not self.stopped:
            tail = self._reply[self._sentence_start :]
            if final:
                if self._judge(tail):
                    self._shown = len(self._reply)
            else:
                self._show_words(tail)
        return self._reply[before : self._shown]

    def _judge(self, sentence: str) -> bool:
        """Whether a finished sentence may stand; if not, the reply stops before it (or after it, when part
        of it was shown already because its opening repeated nothing)."""
        if sentence.lstrip().startswith("```"):
            self._in_code = not self._in_code
            return True
        if self._in_code:
            return True
        found = _words(sentence)
        words = tuple(m.group(0) for m in found)
        if (loop := _loop_start(words)) is not None:
            self._stop(self._sentence_start + found[loop].start())
            return False
        words = _unnumbered(words)
        triples = _triples(words)
        resaid = len(words) >= RESAID_WORDS and len(triples & self._triples) >= RESAID_SHARE * len(triples)
        if resaid or len(words) >= MIN_WORDS and any(_alike(words, said) for said in self._said):
            shown_part = self._shown > self._sentence_start
            self._stop(self._sentence_start + (len(sentence.rstrip()) if shown_part else 0))
            return False
        if words:
            self._said.append(words)
            self._triples |= triples
        return True

    def _show_words(self, tail: str) -> None:
        # Only whole words are decided: the last one may still grow.
        cut = max(tail.rfind(" "), tail.rfind("\n"))
        if cut < 0:
            return
        if self._in_code or tail.lstrip().startswith("```"):
            self._shown = max(self._shown, self._sentence_start + cut)
            return
        found = _words(tail[:cut])
        words = tuple(m.group(0) for m in found)
        if (loop := _loop_start(words)) is not None:
            self._stop(self._sentence_start + found[loop].start())
            return
        opening = _unnumbered(words)[:OPENING_WORDS]
        if len(opening) < OPENING_WORDS or any(
            said[:OPENING_WORDS] == opening for said in self._said if len(said) >= MIN_WORDS
        ):
            return  # it may turn out to repeat an earlier sentence: hold it back until it ends
        echo = _echo_start(words)
        upto = found[echo].start() if echo < len(words) else cut
        self._shown = max(self._shown, self._sentence_start + upto)

    def _stop(self, at: int) -> None:
        self._shown = max(self._shown, at)  # never before what was shown: a stream cannot take text back
        self.stopped = True


def guarded(reply: str) -> tuple[str, bool]:
    """A whole reply as the guard lets it be shown, and whether it was cut."""
    guard = RepetitionGuard()
    guard.feed(reply)
    guard.close()
    return guard.text.rstrip(), guard.stopped
