"""Finding and reading the doc files of a folder without ever leaving it.

Symbolic links (to files or folders, dangling or looping) are not followed; a hard link whose file also has
a name outside the folder, a FIFO or device, and a file over the size limit are not read. Each is reported
with its reason. Reading re-checks what it opens, since the folder may change between listing and reading.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from ingest.extract import SUPPORTED_SUFFIXES

# Build output, dependencies, and the templates and theme files of doc generators: not pages.
SKIPPED_DIRS = {
    "_build",
    "node_modules",
    "__pycache__",
    "venv",
    ".venv",
    "site-packages",
    "_static",
    "_templates",
    "_site",
    "layouts",
    "overrides",
    "themes",
}
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024


class FileIssue(BaseModel):
    source: str
    reason: str


class FileRefused(Exception):
    """A file that is not read, and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DocFile:
    source: str  # path relative to the folder, with '/'
    path: Path
    size: int
    inode: tuple[int, int] = (0, 0)  # (device, inode) when listed: what is read must be that same file


def scan_folder(
    root: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, suffixes: frozenset[str] = SUPPORTED_SUFFIXES
) -> tuple[list[DocFile], list[FileIssue]]:
    """The doc files under root that are safe to read, and those passed over with their reasons."""
    candidates: list[tuple[DocFile, os.stat_result]] = []
    issues: list[FileIssue] = []
    names_inside: dict[tuple[int, int], int] = {}
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        kept = []
        for name in sorted(dirnames):
            if name.startswith(".") or name in SKIPPED_DIRS:
                continue
            if os.path.islink(os.path.join(directory, name)):
                source = Path(directory, name).relative_to(root).as_posix()
                issues.append(
                    FileIssue(source=source, reason=_link_reason(root, Path(directory, name), "folder"))
                )
                continue
            kept.append(name)
        dirnames[:] = kept
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(directory) / filename
            try:
                info = path.lstat()
            except OSError:
                continue  # gone since the listing
            if stat.S_ISREG(info.st_mode):
                key = (info.st_dev, info.st_ino)
                names_inside[key] = names_inside.get(key, 0) + 1
            if PurePosixPath(filename).suffix.lower() not in suffixes:
                continue
            source = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                issues.append(FileIssue(source=source, reason=_link_reason(root, path, "file")))
            elif not stat.S_ISREG(info.st_mode):
                issues.append(
                    FileIssue(source=source, reason=f"not a regular file ({_kind(info.st_mode)}): not read")
                )
            elif info.st_size > max_file_bytes:
                issues.append(
                    FileIssue(
                        source=source,
                        reason=f"{info.st_size:,} bytes: over the size limit of {max_file_bytes:,} (RAGSVC_MAX_FILE_BYTES)",
                    )
                )
            else:
                candidates.append((DocFile(source, path, info.st_size, (info.st_dev, info.st_ino)), info))
    files = []
    for doc, info in candidates:
        if info.st_nlink > names_inside.get((info.st_dev, info.st_ino), 0):
            # Another name for this file lies outside the folder: reading it would read outside.
            issues.append(
                FileIssue(
                    source=doc.source,
                    reason="hard link to a file that also has a name outside the folder: not read",
                )
            )
        else:
            files.append(doc)
    issues.sort(key=lambda issue: issue.source)
    return files, issues


def _link_reason(root: Path, path: Path, what: str) -> str:
    try:
        target = path.resolve(strict=True)
    except RuntimeError:  # Python 3.11 reports a loop this way
        return f"symbolic link loop ({what}): not followed"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symbolic link loop ({what}): not followed"
        return f"dangling symbolic link ({what}): not followed"
    if not target.is_relative_to(root):
        return f"symbolic link to a {what} outside the folder: not followed"
    return f"symbolic link ({what}): not followed; the {what} it points to is read under its own name"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "a special file"


def read_doc_file(root: Path, doc: DocFile, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The file's bytes, refusing what changed into a link, a special file or a path outside root since the
    folder was listed, and never reading past the size limit."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(doc.path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused("became a symbolic link while being ingested: not followed") from exc
        raise FileRefused(f"unreadable: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"not a regular file ({_kind(info.st_mode)}): not read")
        try:
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            opened = doc.path.resolve()
        if not opened.is_relative_to(root):
            raise FileRefused(
                "resolves outside the folder (a folder above it was replaced by a link): not read"
            )
        if doc.inode != (0, 0) and (info.st_dev, info.st_ino) != doc.inode:
            # Replaced since the listing, perhaps by a hard link to a file outside: read on the next run.
            raise FileRefused("replaced by another file while being ingested: not read")
        try:
            raw = handle.read(max_file_bytes + 1)
        except OSError as exc:
            raise FileRefused(f"unreadable: {exc.strerror or exc}") from exc
    if len(raw) > max_file_bytes:
        raise FileRefused(f"over the size limit of {max_file_bytes:,} bytes (RAGSVC_MAX_FILE_BYTES)")
    return raw
