"""YAML data files parsed once per content: the parsed tree kept beside the file, as Python keeps bytecode.

Why: the catalogue's YAML (maps and trials) is 90 % of loading it, about 55 ms that every service start,
screen, worklist run and spawned worker paid again for the same bytes. Parsed once, the tree is kept in a
`.parsed/` folder next to the file, under the SHA-256 of the file's exact bytes and of what else decides
the tree: the format, PyYAML's, libyaml's and Python's versions, the caller's bounds, and the source of
this module and of the caller (whose checks a kept tree skips). A changed byte, or a release that checks
more, is a different key, so a stale tree is never read; nothing is compared by date. Where a source
cannot be read (a zip import), nothing is kept.

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
import functools
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


def tree(
    path: Path, data: bytes, parse: Callable[[], Any], salt: str = "", code: tuple[str, ...] = ()
) -> tuple[Any, bool]:
    """(the parsed tree of `data`, the bytes just read from `path`; whether it was kept from an earlier
    parse). `parse` parses `data` (and may raise: nothing is kept then); `salt` names anything besides the
    bytes that decides the tree or whether it is accepted (a parser's bounds), and `code` the source files
    (the caller's `__file__`) whose change could change it."""
    if not enabled():
        return parse(), False
    limit = len(data) * _SIZE_FACTOR + 4096
    try:
        key = _key(data, salt, code)
        found, kept = _read(path, key, limit)
    except Exception:  # noqa: BLE001 - a kept tree only ever saves a parse; whatever fails, parse
        return parse(), False  # (a source that cannot be read, as in a zip import: nothing is kept either)
    if found:
        return kept, True
    parsed = parse()
    with contextlib.suppress(Exception):  # likewise: a tree that cannot be kept is parsed next time
        _write(path, key, parsed, limit)
    return parsed, False


@functools.cache
def _code(files: tuple[str, ...]) -> str:
    """The SHA-256 of this module's source and `files`: a new release or an edit of the parser or of the
    checks a kept tree skips never serves the old trees. OSError where a source cannot be read."""
    h = hashlib.sha256()
    for name in (__file__, *files):
        h.update(Path(name).read_bytes())
    return h.hexdigest()


def _key(data: bytes, salt: str, code: tuple[str, ...]) -> str:
    h = hashlib.sha256(FORMAT)
    libyaml = getattr(getattr(yaml, "_yaml", None), "get_version_string", lambda: "none")()
    parser = f"PyYAML {yaml.__version__} libyaml {libyaml} Python {sys.version} {_code(code)}"
    for part in (parser.encode(), salt.encode(), data):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _trusted(st: os.stat_result, owner: int) -> bool:
    """Owned by root or by the cached file's owner, and writable by no one else."""
    return st.st_uid in (0, owner) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _folder(path: Path) -> int:
    """The `.parsed` folder beside `path`, opened without following a link: every later step goes through
    this descriptor, so the folder cannot be swapped for a link between a check and a read or write."""
    return os.open(path.parent / FOLDER, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)


def _read(path: Path, key: str, limit: int) -> tuple[bool, Any]:
    """(found, the kept tree): not found when absent, untrusted, too large or not one of our trees."""
    owner = os.stat(path).st_uid
    try:
        folder = _folder(path)
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
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _trusted(st, owner) or st.st_size > limit:
            return False, None
        raw = _at_most(fd, limit + 1)
    finally:
        os.close(fd)
    if len(raw) > limit:
        return False, None
    try:
        kept = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None
    return (True, kept["tree"]) if type(kept) is dict and kept.keys() == {"tree"} else (False, None)


def _at_most(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write(path: Path, key: str, parsed: Any, limit: int) -> None:
    """Keep the tree, if the folder is ours to write and JSON holds the tree exactly within `limit` bytes;
    remove this file's other trees (its earlier contents) either way."""
    owner = os.stat(path).st_uid
    with contextlib.suppress(FileExistsError):
        os.mkdir(path.parent / FOLDER, 0o755)
    folder = _folder(path)
    try:
        if not _trusted(os.fstat(folder), owner) or not os.access(path.parent / FOLDER, os.W_OK):
            return  # checked before any work: an image's folder is root's, and its service cannot write it
        name = f"{path.name}.{key}.json"
        raw = orjson.dumps({"tree": parsed}) if _exact(parsed, limit) else b""
        if raw and len(raw) <= limit:  # a lone surrogate raises JSONEncodeError, a TypeError: not kept
            _put(folder, name, raw)
        for old in os.listdir(folder):  # exactly this file's names: "a.yaml" never touches "a.yaml.b.yaml"'s
            if old != name and old.startswith(path.name) and _ENTRY.fullmatch(old, len(path.name)):
                with contextlib.suppress(OSError):
                    os.unlink(old, dir_fd=folder)
    finally:
        os.close(folder)


def _put(folder: int, name: str, raw: bytes) -> None:
    """`raw` as `name` in the folder, whole or not at all (written aside, then renamed over)."""
    tmp = f"{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o644, dir_fd=folder)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=folder)


def _exact(node: Any, limit: int) -> bool:
    """Whether JSON gives back exactly this tree, each list and mapping once, in about `limit` bytes (an
    iterative walk that stops as soon as it is sure: a string a map's aliases repeat a thousand times
    is never written out)."""
    stack, seen, size = [node], set(), 0
    while stack:
        x = stack.pop()
        t = type(x)
        size += len(x) + 2 if t is str else 8
        if size > limit:
            return False
        if t is dict or t is list:
            if id(x) in seen:
                return False  # shared by a YAML alias: written out again and again, or for ever
            seen.add(id(x))
            if t is dict:
                if not all(type(k) is str for k in x):
                    return False
                size += sum(len(k) + 3 for k in x)
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
