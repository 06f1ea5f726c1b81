#!/usr/bin/env bash
# Runs the service with embedded defaults on http://127.0.0.1:8000 (override with TRIAL_MATCHER_* variables).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# Embedded local defaults: client authentication off (the service warns loudly at start-up).
export TRIAL_MATCHER_AUTH_REQUIRED=${TRIAL_MATCHER_AUTH_REQUIRED:-false}
exec .venv/bin/trial-matcher serve "$@"
