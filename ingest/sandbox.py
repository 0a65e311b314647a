"""Parsing in a worker process under a time and a memory limit, so that a file that hangs a parser or
blows up its memory costs that file, never the server.

The worker opens no files and may write none (RLIMIT_FSIZE is 0): the bytes go in over a pipe and the
ParsedDocument comes back as JSON. A worker that is stopped or dies is replaced for the next file.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

from indexes.errors import RagsvcError
from ingest.document import ExtractionFailed, ParsedDocument, Section

_FRAME = struct.Struct(">Q")
_REPO = Path(__file__).resolve().parent.parent
_START_TIMEOUT = 120.0
# A document's text may not exceed this: a small file that expands into gigabytes of text (a PDF whose
# streams inflate, say) would otherwise move the blow-up into the process that receives it.
MAX_TEXT_CHARS = 64 << 20
_MAX_REPLY_BYTES = 8 * MAX_TEXT_CHARS


class Extractor:
    """One worker process, reused file after file; use as a context manager."""

    def __init__(self, timeout: float = 120.0, memory_bytes: int = 2 << 30) -> None:
        self.timeout = timeout  # seconds one file may take to parse
        self.memory_bytes = memory_bytes  # address space of the worker process
        self._process: subprocess.Popen[bytes] | None = None
        self._temp: str | None = None
        self.started = 0  # workers started: 1 unless files were stopped or crashed it

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extract(self, source: str, raw: bytes) -> ParsedDocument:
        """The parsed document, or ExtractionFailed with the reason for the summary."""
        process = self._worker()
        deadline = time.monotonic() + self.timeout
        header = json.dumps({"source": source}).encode()
        try:
            assert process.stdin is not None
            process.stdin.write(_FRAME.pack(len(header)) + header + _FRAME.pack(len(raw)))
            process.stdin.write(raw)
            process.stdin.flush()
            reply = json.loads(self._read_frame(process, deadline))
        except TimeoutError:
            self._stop()
            raise ExtractionFailed(
                f"parsing took longer than {self.timeout:g} s: stopped (a hostile or broken file?)"
            ) from None
        except (BrokenPipeError, EOFError, ValueError):
            code = self._stop()
            if code in (-signal.SIGKILL, -signal.SIGSEGV, -signal.SIGABRT, 1):
                why = f"the parser crashed (exit {code}), likely past its memory limit of {self.memory_bytes >> 20} MiB"
            else:
                why = f"the parser crashed (exit {code})"
            raise ExtractionFailed(why) from None
        if reply.get("restart"):
            self._stop()
        if not reply["ok"]:
            raise ExtractionFailed(reply["reason"])
        return _document_from_json(reply["document"])

    def close(self) -> None:
        self._stop()

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        self._temp = tempfile.mkdtemp(prefix="ragsvc-parse-")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(_REPO),
            "PYTHONDONTWRITEBYTECODE": "1",
            "TMPDIR": self._temp,
            "HOME": self._temp,
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ingest.sandbox", str(self.memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self._temp,
            env=env,
            close_fds=True,
        )
        self.started += 1
        try:  # the worker says when its parsers are loaded: that start-up is not the file's parsing time
            self._read_frame(self._process, time.monotonic() + _START_TIMEOUT)
        except (TimeoutError, EOFError) as exc:
            self._stop()
            raise ExtractionFailed("the parsing worker did not start") from exc
        return self._process

    def _stop(self) -> int | None:
        code = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            code = self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                try:
                    if pipe is not None:
                        pipe.close()
                except OSError:
                    pass
            self._process = None
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None
        return code

    @staticmethod
    def _read_frame(process: subprocess.Popen[bytes], deadline: float) -> bytes:
        assert process.stdout is not None
        fd = process.stdout.fileno()

        def read_exact(size: int) -> bytes:
            buffer = bytearray()
            while len(buffer) < size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise TimeoutError
                piece = os.read(fd, min(size - len(buffer), 1 << 20))
                if not piece:
                    raise EOFError
                buffer += piece
            return bytes(buffer)

        (size,) = _FRAME.unpack(read_exact(_FRAME.size))
        if size > _MAX_REPLY_BYTES:
            raise EOFError  # not what an honest worker sends: treated as a crash
        return read_exact(size)


def _document_from_json(data: dict[str, Any]) -> ParsedDocument:
    return ParsedDocument(
        source=data["source"],
        title=data["title"],
        file_type=data["file_type"],
        sections=[Section(**section) for section in data["sections"]],
        metadata=data.get("metadata") or {},
    )


# ---------------------------------------------------------------------------------------------------
# The worker side: python -m ingest.sandbox MEMORY_BYTES


def _confine(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file can be written
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with EFBIG instead of killing
    try:  # die with the process that started us (Linux), even if it is killed mid-file
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _serve(requests: BinaryIO, replies: BinaryIO) -> None:
    from ingest.extract import extract_document

    replies.write(_FRAME.pack(2) + b"{}")  # ready
    replies.flush()
    while True:
        try:
            (size,) = _FRAME.unpack(_read_exact(requests, _FRAME.size))
            header = json.loads(_read_exact(requests, size))
            (size,) = _FRAME.unpack(_read_exact(requests, _FRAME.size))
            raw = _read_exact(requests, size)
        except EOFError:
            return
        reply: dict[str, Any]
        try:
            document = extract_document(header["source"], raw)
            chars = sum(len(section.text) for section in document.sections)
            if chars > MAX_TEXT_CHARS:
                raise ExtractionFailed(f"{chars:,} characters of text: over the limit of {MAX_TEXT_CHARS:,}")
            reply = {"ok": True, "document": asdict(document)}
        except RagsvcError as exc:
            reply = {"ok": False, "reason": exc.message}
        except MemoryError:
            reply = {"ok": False, "reason": "ran out of memory while parsing: stopped", "restart": True}
        except RecursionError:
            reply = {"ok": False, "reason": "nested too deeply to parse", "restart": True}
        except Exception as exc:  # a parser bug or a file no check foresaw: that file fails, with its reason
            reply = {"ok": False, "reason": f"could not parse: {type(exc).__name__}: {exc}"}
        del raw
        body = json.dumps(reply, default=str).encode()
        replies.write(_FRAME.pack(len(body)) + body)
        replies.flush()
        if reply.get("restart"):
            return


def main() -> None:
    _confine(int(sys.argv[1]))
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
