"""Reading a FHIR response without trusting its size: decoded bytes counted as they arrive.

A gzip bomb or a page of gigabytes from an allow-listed server must cost the service no more than
the cap, so bodies are streamed, inflated in small steps and counted per response and per hook
(the hook's searches share one budget). Used by the hook's gatherer and the bulk export client.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


class FetchError(Exception):
    """A FHIR request that gave nothing usable. The message carries no patient data."""


MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # settings.fhir_max_response_bytes
MAX_HOOK_BYTES = 32 * 1024 * 1024  # settings.fhir_max_hook_bytes: no more than a prefetch body may hold
ACCEPT_ENCODING = "gzip, deflate"  # only what Inflater undoes (httpx would add br/zstd when installed)


class Inflater:
    """Undoes a response's Content-Encoding here, never more than `step` bytes of output per piece.

    httpx inflates each network chunk in one call, so 64 kB of a gzip bomb could become 64 MB before
    a single byte was counted; fed through `pieces`, the reader counts and stops after one small piece.
    """

    def __init__(self, encoding: str | None, step: int = 1 << 16) -> None:
        encoding = (encoding or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise FetchError("unsupported content encoding")
        self.step = step
        self._z = None if encoding == "identity" else zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib

    def pieces(self, raw: bytes) -> Iterator[bytes]:
        if self._z is None:
            yield raw
            return
        data = raw
        try:
            while True:
                out = self._z.decompress(data, self.step)
                if out:
                    yield out
                data = self._z.unconsumed_tail
                if not data and len(out) < self.step:
                    return
        except zlib.error as e:
            raise FetchError("response could not be decoded") from e


@dataclass
class ByteBudget:
    """Decoded bytes one hook may still read, shared by its concurrent searches."""

    left: int

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise FetchError("the hook's byte budget was spent; not read")


async def read_capped(resp: httpx.Response, limit: int, budget: ByteBudget | None = None) -> bytes:
    """A streamed response's decoded body, counted as it arrives; FetchError past `limit` or `budget`."""
    inflater = Inflater(resp.headers.get("content-encoding"))
    parts: list[bytes] = []
    size = 0
    async for raw in resp.aiter_raw():
        for piece in inflater.pieces(raw):
            size += len(piece)
            if size > limit:
                raise FetchError("response larger than the size cap; not read")
            if budget is not None:
                budget.take(len(piece))
            parts.append(piece)
    return b"".join(parts)
