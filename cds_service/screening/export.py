"""A FHIR Bulk Data `$export` client: kick-off, poll, download, so a server can be screened directly.

Follows the Bulk Data Access IG (v2): `GET [base]/$export?_type=...` with `Prefer: respond-async`
gives 202 and a `Content-Location` to poll; the poll answers 202 (with `Retry-After`, honoured up to a
cap, and `X-Progress`) until the manifest (200, JSON) lists the NDJSON files, which are downloaded
with the token when the manifest says `requiresAccessToken`. The manifest's `deleted` files (an `_since`
export's deleted resources, as transaction Bundles of DELETE entries) go to `deleted/` beside them, where
the screen does not read them as data and `--since last` removes those resources from its copy of the
export (worklist/mirror.py). Every URL the server sends back
(status, files) is hostile until checked: it must stay on the server's scheme, host and port, under
its base path (urls.py), or it is not contacted. Errors say what failed, never the server's body.

So is what the server sends: polls are at least `min_poll_seconds` apart whatever `Retry-After`
says, the whole export has one deadline, and the files' decoded (decompressed) bytes are capped per
file and in total. A file cut at a cap is deleted and the export fails naming what was cut: an
export is screened as the whole record, so a partial one would turn "not exported" into "none".
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from cds_service.fhir.capped import ACCEPT_ENCODING, FetchError, Inflater
from cds_service.fhir.urls import AllowList, Origin, UnsafeUrl
from cds_service.screening.bulk import DELETED, READ_TYPES
from cds_service.settings import get_settings


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


def _instant(value: object) -> str | None:
    """The manifest's transactionTime, when it is an ISO instant (it is sent back later as `_since`)."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.isoformat() if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class ExportLimits:
    """What one export may cost (settings.export_*; defaults there and in the README)."""

    min_poll_seconds: float = 1.0
    timeout_seconds: float = 6 * 3600.0  # kick-off to last file
    max_file_bytes: int = 8 * 1024**3  # decoded bytes of one file
    max_total_bytes: int = 64 * 1024**3  # decoded bytes of all the files

    @classmethod
    def from_settings(cls) -> ExportLimits:
        """The limits the environment sets (TRIAL_MATCHER_EXPORT_*): the export runs from the CLI."""
        s = get_settings()
        return cls(
            s.export_min_poll_seconds, s.export_timeout_seconds, s.export_max_file_bytes, s.export_max_total_bytes
        )


class BulkExport:
    """One export from one server into one folder."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        max_poll_seconds: float = 120,
        timeout: float | None = None,
        limits: ExportLimits | None = None,
        since: str | None = None,
    ):
        try:
            origin = AllowList.parse(base_url).check(base_url)  # the server named on the command line, and only it
        except ValueError:  # UnsafeUrl: credentials, a query, a fragment, dot segments
            origin = None
        if origin is None:
            raise ExportError("the FHIR server URL is not a plain http(s) base URL")
        self.base: Origin = origin
        self.token = token
        self.limits = limits or ExportLimits.from_settings()
        self.max_poll_seconds = max(max_poll_seconds, self.limits.min_poll_seconds)
        self.timeout = timeout if timeout is not None else self.limits.timeout_seconds
        self.cut: list[str] = []  # files cut at a cap, by name and cap: reported, never screened
        self.since = since  # `_since`: only resources changed after this instant (an earlier transactionTime)
        self.transaction_time: str | None = None  # the manifest's: the `_since` of the next incremental export
        self._total = 0

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Accept": accept, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    def _checked(self, url: object, what: str) -> str:
        try:
            return self.base.follow(url if isinstance(url, str) else "")
        except UnsafeUrl as e:
            raise ExportError(f"the server's {what} URL points outside it; not contacted") from e

    async def run(self, out: Path, progress: Callable[[str], None] = lambda _: None) -> list[Path]:
        """Export the types the criteria read into `out`; return the files written. One deadline for all."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._run(out, progress)
        except TimeoutError as e:
            raise ExportError(f"the export did not finish within {self.timeout:.0f} s") from e

    async def _run(self, out: Path, progress: Callable[[str], None]) -> list[Path]:
        types = ",".join(sorted(READ_TYPES))
        async with httpx.AsyncClient(timeout=120, follow_redirects=False, trust_env=False) as client:
            kick = await client.get(
                f"{self.base.url}/$export",  # system level: Medication is in no patient compartment
                params={"_type": types, **({"_since": self.since} if self.since else {})},
                headers={**self._headers("application/fhir+json"), "Prefer": "respond-async"},
            )
            if kick.status_code != 202:
                raise ExportError(f"kick-off answered HTTP {kick.status_code}, not 202 Accepted")
            status_url = self._checked(kick.headers.get("Content-Location"), "status")
            manifest = await self._poll(client, status_url, progress)
            self.transaction_time = _instant(manifest.get("transactionTime"))
            files = await self._download(client, manifest, out, progress)
            await client.delete(status_url, headers=self._headers("application/fhir+json"))  # let it clean up
        if self.cut:
            raise ExportError("the export was cut, so it is not screened: " + "; ".join(self.cut))
        return files

    async def _poll(self, client: httpx.AsyncClient, url: str, progress: Callable[[str], None]) -> dict:
        """Poll until the manifest; `Retry-After` honoured between min_poll_seconds and max_poll_seconds."""
        wait = 1.0
        while True:  # run()'s deadline ends it
            r = await client.get(url, headers=self._headers("application/json"))
            if r.status_code == 200:
                try:
                    manifest = r.json()
                except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested past the parser's depth
                    raise ExportError("the export manifest was not JSON") from e
                if not isinstance(manifest, dict) or not isinstance(manifest.get("output", []), list):
                    raise ExportError("the export manifest was not a Bulk Data manifest (an object, an output list)")
                return manifest
            if r.status_code != 202:
                raise ExportError(f"export status answered HTTP {r.status_code}")
            progress(r.headers.get("X-Progress", "in progress")[:80])
            asked = _retry_after(r.headers.get("Retry-After"), min(wait * 2, 30))
            wait = max(self.limits.min_poll_seconds, min(self.max_poll_seconds, asked))
            await asyncio.sleep(wait)

    async def _download(
        self, client: httpx.AsyncClient, manifest: dict, out: Path, progress: Callable[[str], None]
    ) -> list[Path]:
        outputs = [
            o for o in manifest.get("output", []) if isinstance(o, dict) and isinstance(o.get("type"), str)
            and o["type"] in READ_TYPES
        ]  # fmt: skip
        deleted = [o for o in manifest.get("deleted") or [] if isinstance(o, dict)] if isinstance(
            manifest.get("deleted"), list) else []  # fmt: skip
        headers = {**self._headers("application/fhir+ndjson"), "Accept-Encoding": ACCEPT_ENCODING}
        if not manifest.get("requiresAccessToken"):
            headers.pop("Authorization", None)  # the files are open: the token stays home
        out.mkdir(parents=True, exist_ok=True)
        jobs = [
            (self._checked(o.get("url"), "file"), out / f"{o['type']}.{i:03d}.ndjson") for i, o in enumerate(outputs)
        ]
        if deleted:  # an `_since` export's deletions: Bundles of DELETE entries, kept apart from the data
            (out / DELETED).mkdir(exist_ok=True)
            jobs += [
                (
                    self._checked(o.get("url") if isinstance(o, dict) else None, "file"),
                    out / DELETED / f"Bundle.{i:03d}.ndjson",
                )
                for i, o in enumerate(deleted)
            ]
        limit = asyncio.Semaphore(4)

        async def one(url: str, path: Path) -> Path | None:
            async with limit:
                if self._total > self.limits.max_total_bytes:  # the total is spent: not even asked for
                    self._cut(path, f"over the {self.limits.max_total_bytes}-byte total limit")
                    return None
                async with client.stream("GET", url, headers=headers) as r:
                    if r.status_code != 200:
                        raise ExportError(f"an export file answered HTTP {r.status_code}")
                    kept = await self._save(r, path)
            progress(f"downloaded {path.name}" if kept else f"cut {path.name}")
            return path if kept else None

        return [p for p in await asyncio.gather(*(one(u, p) for u, p in jobs)) if p is not None]

    async def _save(self, r: httpx.Response, path: Path) -> bool:
        """Write one file's decoded bytes; False (file deleted, cut noted) past a cap, so disk stays bounded."""
        size, why = 0, None
        try:
            inflater = Inflater(r.headers.get("content-encoding"))
            with path.open("wb") as f:
                async for raw in r.aiter_raw():
                    for piece in inflater.pieces(raw):
                        size += len(piece)
                        self._total += len(piece)
                        if size > self.limits.max_file_bytes:
                            why = f"over the {self.limits.max_file_bytes}-byte file limit"
                        elif self._total > self.limits.max_total_bytes:
                            why = f"over the {self.limits.max_total_bytes}-byte total limit"
                        if why:
                            break
                        f.write(piece)
                    if why:
                        break
        except FetchError as e:  # an encoding it cannot undo, or a corrupt stream
            path.unlink(missing_ok=True)
            raise ExportError(f"an export file could not be read: {e}") from e
        if why:
            self._cut(path, why)
        return why is None

    def _cut(self, path: Path, why: str) -> None:
        """Delete what was written of a cut file and note it (the name is ours: type and index, no data)."""
        path.unlink(missing_ok=True)
        self.cut.append(f"{path.name} {why}")
