"""Which URLs the service may fetch: every URL from a request or a FHIR response is hostile until checked here.

A string prefix is not a check: `http://127.0.0.1` is a prefix of `http://127.0.0.10:8964/`,
`https://ehr.example.org` of `https://ehr.example.org.attacker.tld/`, and
`http://127.0.0.1:8962@169.254.169.254/` names another host behind a userinfo. So every URL is
parsed into scheme, host, port and path, dot segments are resolved before any comparison, and the
URL that is fetched is rebuilt from the parts that were checked (never the raw string).

- `Origin.parse` reads a FHIR base URL (fhirServer, an allow-list entry): http(s), a host, no
  userinfo, query, fragment, dot segments or `;` path parameters (`/fhir/..;/x` is `/x` to Tomcat).
- `AllowList` holds the configured entries; a base is allowed when scheme, host and port are equal
  to an entry's and its path is the entry's path or under it.
- `Origin.follow` checks a continuation (`Bundle.link[next]`) against the server being read: same
  scheme, host and port, path at or under the base path, no `;` path parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")  # whitespace, control characters, backslash
_ENCODED_SEPARATORS = re.compile(r"%(2f|5c|2e)", re.IGNORECASE)  # encoded '/', '\' and '.'
# Servlet containers (Tomcat, under HAPI) drop `;params` from each segment before resolving dot segments,
# so `/fhir/..;/admin` is `/admin` to them while it looks like a segment named `..;` to RFC 3986.
_PATH_PARAMETERS = re.compile(r";|%3b", re.IGNORECASE)
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)


class UnsafeUrl(ValueError):
    """A URL the service will not fetch. The message names the rule, never the URL."""


def _split(url: str) -> tuple[str, str, int, str, str, str]:
    """(scheme, host, port, path, query, fragment) of an absolute http(s) URL, or UnsafeUrl."""
    if not isinstance(url, str) or len(url) > 4096 or _FORBIDDEN.search(url):
        raise UnsafeUrl("not a well-formed URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UnsafeUrl("not a well-formed URL") from e
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("only http and https URLs are fetched")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise UnsafeUrl("URLs with user information are not fetched")
    host = parts.hostname or ""
    if not host or not host.isascii():
        raise UnsafeUrl("the URL names no usable host")
    return scheme, host, port or DEFAULT_PORTS[scheme], parts.path, parts.query, parts.fragment


def _dot(segment: str) -> str | None:
    """ "." or ".." when a server could take `segment` for a dot segment (%2e, `..;x`), else None.

    Any server's reading counts: a percent-decoded dot, and the part before `;` (Tomcat's path
    parameters), so a check here never sees a plain name where the server sees a step up."""
    name = _ENCODED_DOT.sub(".", segment).split(";", 1)[0]
    return name if name in (".", "..") else None


def _refuse_path_parameters(path: str) -> None:
    """No `;` (nor %3b) in a FHIR URL's path: FHIR paths have none, and servlet containers strip them."""
    if _PATH_PARAMETERS.search(path):
        raise UnsafeUrl("a FHIR URL has no ';' path parameters")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: what a server makes of `a/./b/../c` (any spelling of a dot segment)."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        dot = _dot(seg)
        if dot == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        elif dot == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


@dataclass(frozen=True)
class Origin:
    """A FHIR base: scheme, host, port and a path without a trailing slash."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(cls, url: str) -> Origin:
        scheme, host, port, path, query, fragment = _split(url)
        if query or fragment or "?" in url or "#" in url:
            raise UnsafeUrl("a FHIR base URL has no query or fragment")
        _refuse_path_parameters(path)
        if _ENCODED_SEPARATORS.search(path) or any(_dot(seg) for seg in path.split("/")):
            raise UnsafeUrl("a FHIR base URL has no dot segments or encoded separators")
        return cls(scheme, host, port, path.rstrip("/"))

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"

    def contains_path(self, path: str) -> bool:
        return not self.path or path == self.path or path.startswith(self.path + "/")

    def follow(self, url: str) -> str:
        """The URL to fetch for a continuation link, rebuilt from checked parts; UnsafeUrl if it leaves this base."""
        scheme, host, port, path, query, _fragment = _split(url)
        if (scheme, host, port) != (self.scheme, self.host, self.port):
            raise UnsafeUrl("the link points to another server")
        _refuse_path_parameters(path)
        if _ENCODED_SEPARATORS.search(path):
            raise UnsafeUrl("the link's path has encoded separators")
        path = _remove_dot_segments(path)
        if not self.contains_path(path):
            raise UnsafeUrl("the link points outside the FHIR base path")
        return f"{self.scheme}://{self.netloc}{path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class AllowList:
    """The FHIR servers this service may contact. Empty (the default) contacts nothing."""

    entries: tuple[Origin, ...] = ()
    allow_any: bool = False

    @classmethod
    def parse(cls, setting: str) -> AllowList:
        """Comma-separated base URLs (scheme, host, port; optionally a path). '*' allows any (sandbox only)."""
        items = [s.strip() for s in setting.split(",") if s.strip()]
        return cls(tuple(Origin.parse(i) for i in items if i != "*"), "*" in items)

    def permits(self, base: Origin) -> bool:
        if self.allow_any:
            return True
        return any(
            (e.scheme, e.host, e.port) == (base.scheme, base.host, base.port) and e.contains_path(base.path)
            for e in self.entries
        )

    def check(self, url: str) -> Origin | None:
        """The parsed base when `url` is well formed and allowed, else None."""
        try:
            base = Origin.parse(url)
        except UnsafeUrl:
            return None
        return base if self.permits(base) else None
