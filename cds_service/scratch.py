"""Work folders of $TMPDIR (a screen's partitions, its workers' results, rows spilled to disk): removed
whole however the work ends, and locked while in use, so that those of a process killed outright are
removed by the next one."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cds_service.interrupts import interrupts_held


def remove_folder(path: str | os.PathLike[str]) -> None:
    """Delete a work folder of ours whole, whatever is missing from it, with interrupts held (`interrupts_held`):
    a removal cut short leaves the rest of the folder (the size of the export, for partitions) behind."""
    with interrupts_held():
        shutil.rmtree(path, ignore_errors=True)


LOCK = ".in-use"  # in a scratch folder: locked (flock) while its process lives


class Scratch:
    """A new folder of $TMPDIR for a process's work files, removed by `remove` (with interrupts held), and
    locked while it is in use: the folders of a process killed outright (SIGKILL, the out-of-memory killer),
    which nothing could remove, are removed by the next process that makes one with the same prefix
    (`sweep`). Partitions are the size of the export: a few of them left behind would fill the disk.

    The lock is taken on a file before it gets its name, so no folder is ever seen with its lock free while
    its process lives; the lock is the kernel's, so it is free once that process and every process that
    inherited it (forked workers) have ended, however they ended."""

    def __init__(self, prefix: str) -> None:
        with interrupts_held():  # a folder made but not yet locked would never be swept
            sweep(prefix)
            self.path = Path(tempfile.mkdtemp(prefix=prefix))
            self._lock: int | None = None
            try:
                fd, name = tempfile.mkstemp(dir=self.path)
                self._lock = fd  # (interrupted after the block: held until this process ends, then swept)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(name, self.path / LOCK)
            except BaseException:  # out of descriptors, say: the folder is not left without its lock
                self.remove()
                raise

    def remove(self) -> None:
        remove_folder(self.path)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def sweep(prefix: str) -> list[Path]:
    """Remove the scratch folders `prefix*` of $TMPDIR that this user made and no live process holds (their
    lock is free); folders without a lock (another program's, or ours being made) and other users' are left
    alone. The folders removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            st = folder.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            # not blocking: a FIFO of that name would wait for a writer for ever
            fd = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # not a lock of ours
                raise BlockingIOError
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # in use
            os.close(fd)
            continue
        try:
            remove_folder(folder)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A `Scratch` folder, removed however the block ends (not `TemporaryDirectory`, whose removal a second
    Ctrl-C or SIGTERM cuts short)."""
    scratch = Scratch(prefix)
    try:
        yield scratch.path
    finally:
        scratch.remove()
