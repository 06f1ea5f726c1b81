#!/usr/bin/env bash
# Creates .venv and installs the service: `bootstrap.sh` the service alone (scripts/serve.sh), `bootstrap.sh test`
# with its test dependencies too (scripts/test.sh: PySpark, schemathesis, psycopg, ...). Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
hash=$(sha256sum pyproject.toml | cut -c1-16)
stamp=.venv/.installed-$hash${extras:+-$extras}
if [ ! -f "$stamp" ] && [ ! -f ".venv/.installed-$hash-test" ]; then  # the test install holds the service's
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".${extras:+[$extras]}"
  find .venv -maxdepth 1 -name '.installed-*' ! -name ".installed-$hash*" -delete  # an older pyproject's
  touch "$stamp"
fi
