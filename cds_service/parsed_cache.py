"""YAML data files parsed once per content: the parsed tree kept beside the file, as Python keeps bytecode.

Why: the catalogue's YAML (maps and trials) is 90 % of loading it, about 55 ms that every service start,
screen, worklist run and spawned worker paid again for the same bytes. Parsed once, the tree is kept in a
`.parsed/` folder next to the file, under the SHA-256 of the file's exact bytes (and of what else decides
the tree: the format, PyYAML's version, the caller's bounds). A changed byte is a different key, so a
stale tree is never read; nothing is compared by date.

Why it is safe: the folder sits beside the files it caches, like `__pycache__`. It is written only where
this process may write the files' folder, so whoever can change a kept tree could change the trial file
itself. A kept tree is read only from a folder and a file that are not symlinks, owned by this user or by
the file's owner, and writable by no group or other user; anything else is ignored and parsed again. A
tree is data (JSON), never code, and is kept only when JSON holds it exactly (strings, finite numbers
within 64 bits, booleans, null, lists, mappings with string keys); a date or a set is parsed every time.
`TRIAL_MATCHER_CATALOGUE_CACHE=false` turns reading and writing off (read-only images simply never write).
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

FOLDER = ".parsed"
FORMAT = b"trial-matcher parsed tree 1"
_SIZE_FACTOR = 16  # a kept tree is at most this many times its file's bytes (JSON of YAML is ~1-3x)
_PLAIN = (str, bool, type(None))
_INT64 = 2**63


def enabled() -> bool:
    """TRIAL_MATCHER_CATALOGUE_CACHE (imported late: settings import the API, which loads the catalogue)."""
    from cds_service.settings import get_settings

    return get_settings().catalogue_cache


def tree(path: Path, data: bytes, parse: Callable[[], Any], salt: str = "") -> tuple[Any, bool]:
    """(the parsed tree of `data`, the bytes just read from `path`; whether it was kept from an earlier
    parse). `parse` parses `data` (and may raise: nothing is kept then); `salt` names anything besides the bytes
    that decides the tree or whether it is accepted (a parser's bounds)."""
    if not enabled():
        return parse(), False
    key = _key(data, salt)
    kept = _read(path, key, len(data))
    if kept is not None:
        return kept, True
    parsed = parse()
    _write(path, key, parsed)
    return parsed, False


def _key(data: bytes, salt: str) -> str:
    h = hashlib.sha256(FORMAT)
    for part in (yaml.__version__.encode(), salt.encode(), data):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _entry(path: Path, key: str) -> Path:
    return path.parent / FOLDER / f"{path.name}.{key}.json"


def _trusted(st: os.stat_result, owner: int) -> bool:
    return st.st_uid in (os.geteuid(), owner) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(path: Path, key: str, size: int) -> Any | None:
    """The kept tree, or None: absent, unreadable, untrusted or not JSON (then it is parsed again)."""
    entry = _entry(path, key)
    try:
        owner = os.stat(path).st_uid
        folder = os.lstat(entry.parent)
        if not stat.S_ISDIR(folder.st_mode) or not _trusted(folder, owner):
            return None
        fd = os.open(entry, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st, owner):
            return None
        limit = size * _SIZE_FACTOR + 4096
        raw = f.read(limit + 1)
    if len(raw) > limit:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _write(path: Path, key: str, parsed: Any) -> None:
    """Keep the tree, if JSON holds it exactly and the folder may be written; otherwise do nothing. Other
    trees of the same file (earlier contents) are removed."""
    if not _exact(parsed):
        return
    entry = _entry(path, key)
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        entry.parent.mkdir(mode=0o755, exist_ok=True)
        if not _trusted(os.lstat(entry.parent), os.stat(path).st_uid):
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(parsed))  # JSONEncodeError (a lone surrogate) is a TypeError
        os.replace(tmp, entry)
        for old in entry.parent.glob(f"{path.name}.*.json"):
            if old != entry:
                old.unlink(missing_ok=True)
    except (OSError, TypeError):  # a read-only folder (an image), a full disk: parse again next time
        tmp.unlink(missing_ok=True)


def _exact(node: Any) -> bool:
    """Whether JSON gives back exactly this tree (no recursion: an iterative walk of a bounded tree)."""
    stack = [node]
    while stack:
        x = stack.pop()
        t = type(x)
        if t is dict:
            if not all(type(k) is str for k in x):
                return False
            stack.extend(x.values())
        elif t is list:
            stack.extend(x)
        elif t is int:
            if not -_INT64 <= x < _INT64:
                return False
        elif t is float:
            if not math.isfinite(x):
                return False
        elif t not in _PLAIN:
            return False  # a date, a set, bytes: JSON would give back something else
    return True
