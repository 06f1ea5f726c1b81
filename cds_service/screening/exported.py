"""The screen command's `$export` step (`--fhir-server`): into OUT_DIR/export, said in one line if it fails.

Apart from the command so that screening a folder, the common case, never imports the HTTP client: httpx
and the command-line tool it imports with it are about a tenth of a second of every start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import httpx
from rich.console import Console
from rich.markup import escape

from cds_service.screening.bulk import export_files
from cds_service.screening.export import DELETED, BulkExport, ExportError
from cds_service.screening.say import say


def export_token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("TRIAL_MATCHER_EXPORT_TOKEN") or None


def exported(args: argparse.Namespace, err: Console, stamp: list[str | None], since: str | None = None) -> Path | None:
    """Run a Bulk Data $export of --fhir-server into OUT_DIR/export (only what changed after `since`, when
    given); None (said why) when it fails. The folder is emptied of an earlier export's files first: they
    would be screened with this one. `stamp` receives the export's transactionTime."""
    token = export_token(args)
    target = Path(args.out) / "export"
    try:
        stale = clear_export(target)
        if stale:
            say(err, f"$export: removed {stale} file(s) of an earlier export from {target}")
        export = BulkExport(args.fhir_server, token, args.max_poll_seconds, since=since)
        with err.status("Bulk Data $export: kick-off") as status:
            # X-Progress is the server's text: escaped, so markup in it is shown, never run
            files = asyncio.run(export.run(target, lambda msg: status.update(f"Bulk Data $export: {escape(msg)}")))
    except (ExportError, httpx.HTTPError) as e:
        say(err, f"screen: $export failed: {e if isinstance(e, ExportError) else type(e).__name__}")
        return None
    except OSError as e:
        say(err, f"screen: cannot write the export to {target} ({type(e).__name__})")
        return None
    say(err, f"$export: {len(files)} file(s) into {target}")
    stamp[0] = export.transaction_time
    return target


def clear_export(folder: Path) -> int:
    """Delete the NDJSON files an earlier export left in `folder` (only those: nothing else is ours)."""
    if not folder.is_dir():
        return 0
    gone = folder / DELETED  # an earlier export's deletions would be applied again
    stale = [path for _, path in export_files(folder)] + ([p for _, p in export_files(gone)] if gone.is_dir() else [])
    for path in stale:
        path.unlink()
    return len(stale)
