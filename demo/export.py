"""Write the demo patients as a Bulk Data export, one NDJSON file per resource type, to try `screen` without a
FHIR server, Java or Synthea:

    python -m demo.export var/demo-export [--as-of DATE]
    trial-matcher screen var/demo-export --out var/demo-screen

Dates are moved to `--as-of` (default today) as `demo.load` moves them, so the screen reads current records.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

from demo.load import demo_bundles, resources


def write_export(out: Path, as_of: date | None = None) -> dict[str, int]:
    """The demo patients' resources into `out`/<Type>.ndjson; resources per type."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for bundle in demo_bundles(as_of).values():
        for resource in resources(bundle):
            by_type[resource["resourceType"]].append(json.dumps(resource, separators=(",", ":")))
    out.mkdir(parents=True, exist_ok=True)
    for rtype, lines in by_type.items():
        (out / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {rtype: len(lines) for rtype, lines in sorted(by_type.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the export folder to write (NDJSON files are replaced)")
    p.add_argument("--as-of", type=date.fromisoformat, help="date the records should be current on (default today)")
    args = p.parse_args(argv)
    counts = write_export(args.out, args.as_of)
    print(f"wrote {sum(counts.values())} resources of the demo patients to {args.out}: "
          + ", ".join(f"{n} {t}" for t, n in counts.items()), file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
