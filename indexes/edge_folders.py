"""Where Edge indexes live on disk under one root: `root/NAME` is a symbolic link to the live shard folder
`root/.NAME@N` (a plain folder in data dirs made before builds switched folders); a build makes `.NAME@N+1`
and the link moves in one rename. What a crash left half done is finished or undone at start."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from indexes.edge_shard import INDEX_META


class IndexFolders:
    """The index folders under `root`, and the one link per index that says which folder is live."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def folder(self, name: str, generation: int) -> Path:
        # a leading "." makes it a name no index can have, so folders never collide with indexes
        return self.root / f".{name}@{generation}"

    def folders(self, name: str) -> list[Path]:
        """Every internal entry of index `name`: shard folders, the temporary link, the switch intent."""
        # index names hold only letters, digits, "_", "-" and ".", none special to glob, and never "@"
        return sorted(self.root.glob(f".{name}@*"))

    def next_folder(self, name: str) -> Path:
        numbers = [0]
        for entry in self.folders(name):
            tail = entry.name.rpartition("@")[2]
            if tail.isdigit():
                numbers.append(int(tail))
        return self.folder(name, max(numbers) + 1)

    def point(self, name: str, folder: Path) -> None:
        """Make `root/name` lead to `folder` in one rename: a crash leaves the old link or the new one."""
        tmp = self.root / f".{name}@link"
        tmp.unlink(missing_ok=True)
        os.symlink(folder.name, tmp)
        os.replace(tmp, self.path(name))
        fsync_dir(self.root)

    def switch_intent(self, name: str) -> Path:
        return self.root / f".{name}@switch"

    def recover(self) -> None:
        """Finish or undo what a crash interrupted, so each index has one loadable shard: its link's."""
        names = {entry.name[1:].rpartition("@")[0] for entry in self.root.glob(".*@*")}
        for name in names:
            intent = self.switch_intent(name)
            if intent.exists():
                self.finish_switch(name, self.root / intent.read_text().strip())
            live = self.path(name).resolve() if self.exists(name) else None
            for entry in self.folders(name):
                if entry.resolve() != live:
                    remove(entry)

    def finish_switch(self, name: str, built: Path) -> None:
        """Move a plain index folder aside and link `name` to `built` (a crash may stop this anywhere)."""
        path = self.path(name)
        if (built / INDEX_META).exists() and not path.is_symlink():
            if path.exists():
                os.replace(path, self.folder(name, 0))
            self.point(name, built)
        self.switch_intent(name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return (self.path(name) / "wal").exists()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in the folder durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(entry: Path) -> None:
    """A file, link or folder gone, whichever it is; nothing when it is not there."""
    if entry.is_symlink() or entry.is_file():
        entry.unlink(missing_ok=True)
    else:
        shutil.rmtree(entry, ignore_errors=True)
