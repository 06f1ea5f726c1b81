#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, lints, runs pytest.
# Integration tests start their own real FHIR servers (see tests/integration/); set
# FHIR_BASE_URL=<url> to run them against a server you already have instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ -z "${FHIR_BASE_URL:-}" ]; then
  scripts/fhir-servers.sh
fi
scripts/browser-deps.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check . >/dev/null || { echo "ruff format: files need formatting (run .venv/bin/ruff format .)"; exit 1; }
exec .venv/bin/pytest "$@"
