#!/usr/bin/env bash
# Installs the real FHIR servers the integration tests start:
#   sekmet-fhir 0.1.1 (PyPI) in its own virtual environment, .venv-sekmet, so its pins never touch ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-sekmet/bin/sekmet ]; then
  "$PY" -m venv .venv-sekmet
  .venv-sekmet/bin/pip install -q --upgrade pip >/dev/null
  .venv-sekmet/bin/pip install -q "sekmet-fhir==0.1.1"
fi
