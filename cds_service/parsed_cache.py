"""YAML data files parsed once per content: the parsed tree kept beside the file, as Python keeps bytecode.

Why: the catalogue's YAML (maps and trials) is 90 % of loading it, about 55 ms that every service start,
screen, worklist run and spawned worker paid again for the same bytes. Parsed once, the tree is kept in a
`.parsed/` folder next to the file, under the SHA-256 of the file's exact bytes (and of what else decides
the tree: the format, PyYAML's version, the caller's bounds). A changed byte is a different key, so a
stale tree is never read; nothing is compared by date.

Why it is safe: the folder sits beside the files it caches, like `__pycache__`. It is written only where
this process may write the files' folder, so whoever can change a kept tree could change the trial file
itself. A kept tree is read only from a folder and a file that are not symlinks, owned by root or by the
file's owner (not merely by this process's user, who may be unable to change the file), and writable by
no group or other user; anything else is ignored and parsed again. A tree is data (JSON), never code, and
is kept only when JSON holds it exactly and no bigger than it is: strings, finite numbers within 64 bits,
booleans, null, lists and mappings with string keys, each list and mapping once (a YAML alias shares one,
and a self-referencing alias would never end); a date or a set is parsed every time. Whatever goes wrong
with a kept tree (a folder that is a file, a name too long) only means parsing, never an error.
`TRIAL_MATCHER_CATALOGUE_CACHE=false` turns reading and writing off (read-only images simply never write).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

FOLDER = ".parsed"
FORMAT = b"trial-matcher parsed tree 2"
_SIZE_FACTOR = 16  # a kept tree is at most this many times its file's bytes (JSON of YAML is ~1-3x)
_PLAIN = (str, bool, type(None))
_INT64 = 2**63
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_ENTRY = re.compile(r"\.[0-9a-f]{64}\.json")  # after the file's name


def enabled() -> bool:
    """TRIAL_MATCHER_CATALOGUE_CACHE (imported late: settings import the API, which loads the catalogue)."""
    from cds_service.settings import get_settings

    return get_settings().catalogue_cache


def tree(path: Path, data: bytes, parse: Callable[[], Any], salt: str = "") -> tuple[Any, bool]:
    """(the parsed tree of `data`, the bytes just read from `path`; whether it was kept from an earlier
    parse). `parse` parses `data` (and may raise: nothing is kept then); `salt` names anything besides the
    bytes that decides the tree or whether it is accepted (a parser's bounds)."""
    if not enabled():
        return parse(), False
    key = _key(data, salt)
    limit = len(data) * _SIZE_FACTOR + 4096
    try:
        found, kept = _read(path, key, limit)
    except Exception:  # noqa: BLE001 - a kept tree only ever saves a parse; whatever fails, parse
        found = False
    if found:
        return kept, True
    parsed = parse()
    with contextlib.suppress(Exception):  # likewise: a tree that cannot be kept is parsed next time
        _write(path, key, parsed, limit)
    return parsed, False


def _key(data: bytes, salt: str) -> str:
    h = hashlib.sha256(FORMAT)
    parser = f"PyYAML {yaml.__version__} libyaml {getattr(yaml, '__with_libyaml__', False)} Python {sys.version}"
    for part in (parser.encode(), salt.encode(), data):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _trusted(st: os.stat_result, owner: int) -> bool:
    """Owned by root or by the cached file's owner, and writable by no one else."""
    return st.st_uid in (0, owner) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(path: Path, key: str, limit: int) -> tuple[bool, Any]:
    """(found, the kept tree): not found when absent, untrusted, too large or not one of our trees. The
    folder is opened once, without following a link, and the entry opened within it, so neither can be
    swapped between the checks and the read."""
    owner = os.stat(path).st_uid
    try:
        folder = os.open(path.parent / FOLDER, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
    except OSError:
        return False, None
    try:
        if not _trusted(os.fstat(folder), owner):
            return False, None
        fd = os.open(f"{path.name}.{key}.json", os.O_RDONLY | _NO_FOLLOW | os.O_NONBLOCK, dir_fd=folder)
    except OSError:
        return False, None
    finally:
        os.close(folder)
    with open(fd, "rb") as f:  # closes fd on every path
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st, owner) or st.st_size > limit:
            return False, None
        raw = f.read(limit + 1)
    if len(raw) > limit:
        return False, None
    try:
        kept = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None
    return (True, kept["tree"]) if type(kept) is dict and kept.keys() == {"tree"} else (False, None)


def _write(path: Path, key: str, parsed: Any, limit: int) -> None:
    """Keep the tree, if JSON holds it exactly within `limit` bytes and the folder may be written; otherwise
    do nothing. This file's other trees (its earlier contents) are removed."""
    if not _exact(parsed):
        return
    raw = orjson.dumps({"tree": parsed})  # JSONEncodeError (a lone surrogate) is a TypeError: not kept
    if len(raw) > limit:
        return
    folder = path.parent / FOLDER
    folder.mkdir(mode=0o755, exist_ok=True)
    if not _trusted(os.lstat(folder), os.stat(path).st_uid):
        return
    name = f"{path.name}.{key}.json"
    tmp = folder / f"{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o644)
        with open(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, folder / name)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    for old in os.listdir(folder):  # exactly this file's names: "a.yaml" never touches "a.yaml.b.yaml"'s
        if old != name and old.startswith(path.name) and _ENTRY.fullmatch(old, len(path.name)):
            with contextlib.suppress(OSError):
                os.unlink(folder / old)


def _exact(node: Any) -> bool:
    """Whether JSON gives back exactly this tree, each list and mapping once (an iterative walk)."""
    stack, seen = [node], set()
    while stack:
        x = stack.pop()
        t = type(x)
        if t is dict or t is list:
            if id(x) in seen:
                return False  # shared by a YAML alias: written out again and again, or for ever
            seen.add(id(x))
            if t is dict:
                if not all(type(k) is str for k in x):
                    return False
                stack.extend(x.values())
            else:
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
