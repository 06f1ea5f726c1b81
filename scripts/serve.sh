#!/usr/bin/env bash
# Runs the service with embedded defaults on http://127.0.0.1:8000 (override with TRIAL_MATCHER_* variables).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${TRIAL_MATCHER_DATABASE_URL:-}" in
  postgres://* | postgresql://*) scripts/bootstrap.sh postgres ;;  # the store's driver, psycopg
  *) scripts/bootstrap.sh ;;
esac
# Embedded local defaults, never for real patient data:
# - client authentication off (the service warns loudly at start-up);
# - the FHIR servers it may contact: a local HAPI FHIR on loopback port 8080 (scripts/hapi-fhir.sh, docker compose).
#   The service's own default contacts nothing until allow-listed.
export TRIAL_MATCHER_AUTH_REQUIRED=${TRIAL_MATCHER_AUTH_REQUIRED:-false}
export TRIAL_MATCHER_ALLOWED_FHIR_SERVERS=${TRIAL_MATCHER_ALLOWED_FHIR_SERVERS:-http://127.0.0.1:8080/fhir,http://localhost:8080/fhir}
echo "serve.sh: local use only: client authentication ${TRIAL_MATCHER_AUTH_REQUIRED/false/OFF}; FHIR servers allowed: ${TRIAL_MATCHER_ALLOWED_FHIR_SERVERS}" >&2
exec .venv/bin/trial-matcher serve "$@"
