"""Command line: `trial-matcher coverage|serve` (also `python -m cds_service ...`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .catalog import Catalog
from .coverage import coverage, render_text
from .settings import get_settings


def _catalog() -> Catalog:
    s = get_settings()
    return Catalog.load(s.mappings_dir, s.trials_dir)


def cmd_coverage(args: argparse.Namespace) -> int:
    cat = _catalog()
    rows = [coverage(t) for t in cat.trials.values()]
    if args.format == "json":
        print(json.dumps([asdict(r) | {"total": r.total} for r in rows], indent=2))
    else:
        print(render_text(rows))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    s = get_settings()
    uvicorn.run(
        "cds_service.app:create_app",
        factory=True,
        host=args.host or s.host,
        port=args.port or s.port,
        workers=args.workers,
        log_level=s.log_level.lower(),
        access_log=False,  # the app logs requests itself, without query strings
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trial-matcher", description="Clinical trial matching from FHIR R4 data")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("coverage", help="per-trial criteria coverage: total, computable, review, variables used")
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.set_defaults(func=cmd_coverage)
    sv = sub.add_parser("serve", help="run the CDS Hooks service (settings from TRIAL_MATCHER_* variables)")
    sv.add_argument("--host", help="bind address (default TRIAL_MATCHER_HOST or 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default TRIAL_MATCHER_PORT or 8000)")
    sv.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
