#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, lints, runs pytest.
# Integration tests start their own real FHIR servers (see tests/integration/); set
# FHIR_BASE_URL=<url> to run them against a server you already have instead.
# `--unit` runs the unit tests alone: no FHIR servers, no Java, no browser, nothing installed for the
# PostgreSQL tests (they run when the machine has its server binaries) (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
unit=0
if [ "${1:-}" = "--unit" ]; then
  unit=1
  shift
fi
scripts/bootstrap.sh test
if [ "$unit" = 0 ]; then
  if [ -z "${FHIR_BASE_URL:-}" ]; then
    scripts/fhir-servers.sh
  fi
  scripts/browser-deps.sh
  scripts/database-deps.sh
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { echo "ruff format: files need formatting (run .venv/bin/ruff format .)"; exit 1; }
if [ "$unit" = 1 ]; then
  exec .venv/bin/pytest --ignore=tests/integration -m "not integration" "$@"
fi
exec .venv/bin/pytest "$@"
