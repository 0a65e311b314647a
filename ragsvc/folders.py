"""Which server-side folders a request may have ingested: only folders under the configured roots, checked
after every link in the path is resolved, so a link cannot lead out of a root. The CLI run on the data dir's
own machine (inline, or through the server with the data dir's owner token) is not limited."""

from __future__ import annotations

from pathlib import Path

from indexes.errors import InvalidRequest, RagsvcError


class FolderNotAllowed(RagsvcError):
    """The folder is outside every configured ingest root (or none is configured)."""

    code = "folder_not_allowed"


def allowed_folder(path: str | Path, roots: list[Path], *, machine_local: bool = False) -> Path:
    """The folder, resolved, if the server may read it for this caller; the root check comes before any
    check of the folder itself, so a refused caller learns nothing about what exists outside the roots."""
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        raise InvalidRequest(f"{path} is not an absolute path on the server")
    resolved = folder.resolve()
    if not machine_local:
        if not roots:
            raise FolderNotAllowed(
                "this server ingests no server-side folders: its operator sets RAGSVC_INGEST_ROOTS to allow "
                "some; upload the files instead"
            )
        if not any(resolved.is_relative_to(root.expanduser().resolve()) for root in roots):
            raise FolderNotAllowed(f"{path} is not under a folder this server ingests from")
    if not resolved.is_dir():
        raise InvalidRequest(f"{path} is not a folder")
    return resolved
