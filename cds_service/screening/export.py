"""A FHIR Bulk Data `$export` client: kick-off, poll, download, so a server can be screened directly.

Follows the Bulk Data Access IG (v2): `GET [base]/$export?_type=...` with `Prefer: respond-async`
gives 202 and a `Content-Location` to poll; the poll answers 202 (with `Retry-After`, honoured up to a
cap, and `X-Progress`) until the manifest (200, JSON) lists the NDJSON files, which are downloaded
with the token when the manifest says `requiresAccessToken`. Every URL the server sends back
(status, files) is hostile until checked: it must stay on the server's scheme, host and port, under
its base path (urls.py), or it is not contacted. Errors say what failed, never the server's body.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from cds_service.fhir.urls import AllowList, Origin, UnsafeUrl
from cds_service.screening.bulk import READ_TYPES


class ExportError(Exception):
    """The export could not be completed; the message names the step, never patient data."""


def _retry_after(value: str | None, default: float) -> float:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return default
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class BulkExport:
    """One export from one server into one folder."""

    def __init__(self, base_url: str, token: str | None, max_poll_seconds: float = 120, timeout: float = 3600):
        try:
            origin = AllowList.parse(base_url).check(base_url)  # the server named on the command line, and only it
        except ValueError:  # UnsafeUrl: credentials, a query, a fragment, dot segments
            origin = None
        if origin is None:
            raise ExportError("the FHIR server URL is not a plain http(s) base URL")
        self.base: Origin = origin
        self.token = token
        self.max_poll_seconds = max_poll_seconds
        self.timeout = timeout

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Accept": accept, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    def _checked(self, url: str | None, what: str) -> str:
        try:
            return self.base.follow(url or "")
        except UnsafeUrl as e:
            raise ExportError(f"the server's {what} URL points outside it; not contacted") from e

    async def run(self, out: Path, progress: Callable[[str], None] = lambda _: None) -> list[Path]:
        """Export the types the criteria read into `out`; return the files written."""
        types = ",".join(sorted(READ_TYPES))
        async with httpx.AsyncClient(timeout=120, follow_redirects=False, trust_env=False) as client:
            kick = await client.get(
                f"{self.base.url}/$export",  # system level: Medication is in no patient compartment
                params={"_type": types},
                headers={**self._headers("application/fhir+json"), "Prefer": "respond-async"},
            )
            if kick.status_code != 202:
                raise ExportError(f"kick-off answered HTTP {kick.status_code}, not 202 Accepted")
            status_url = self._checked(kick.headers.get("Content-Location"), "status")
            manifest = await self._poll(client, status_url, progress)
            files = await self._download(client, manifest, out, progress)
            await client.delete(status_url, headers=self._headers("application/fhir+json"))  # let it clean up
        return files

    async def _poll(self, client: httpx.AsyncClient, url: str, progress: Callable[[str], None]) -> dict:
        deadline = time.monotonic() + self.timeout
        wait = 1.0
        while time.monotonic() < deadline:
            r = await client.get(url, headers=self._headers("application/json"))
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError as e:
                    raise ExportError("the export manifest was not JSON") from e
            if r.status_code != 202:
                raise ExportError(f"export status answered HTTP {r.status_code}")
            progress(r.headers.get("X-Progress", "in progress")[:80])
            wait = min(self.max_poll_seconds, _retry_after(r.headers.get("Retry-After"), min(wait * 2, 30)))
            await asyncio.sleep(wait)
        raise ExportError(f"the export did not finish within {self.timeout:.0f} s")

    async def _download(
        self, client: httpx.AsyncClient, manifest: dict, out: Path, progress: Callable[[str], None]
    ) -> list[Path]:
        outputs = [o for o in manifest.get("output", []) if isinstance(o, dict) and o.get("type") in READ_TYPES]
        headers = self._headers("application/fhir+ndjson")
        if not manifest.get("requiresAccessToken"):
            headers.pop("Authorization", None)  # the files are open: the token stays home
        out.mkdir(parents=True, exist_ok=True)
        jobs = [
            (self._checked(o.get("url"), "file"), out / f"{o['type']}.{i:03d}.ndjson") for i, o in enumerate(outputs)
        ]
        limit = asyncio.Semaphore(4)

        async def one(url: str, path: Path) -> Path:
            async with limit, client.stream("GET", url, headers=headers) as r:
                if r.status_code != 200:
                    raise ExportError(f"an export file answered HTTP {r.status_code}")
                with path.open("wb") as f:
                    async for chunk in r.aiter_bytes():
                        f.write(chunk)
            progress(f"downloaded {path.name}")
            return path

        return list(await asyncio.gather(*(one(u, p) for u, p in jobs)))
