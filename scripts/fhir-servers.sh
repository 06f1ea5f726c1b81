#!/usr/bin/env bash
# Installs the real components the integration tests start or drive:
#   sekmet-fhir 0.1.1 (PyPI) in its own virtual environment, .venv-sekmet, so its pins never touch ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-sekmet/bin/sekmet ]; then
  "$PY" -m venv .venv-sekmet
  .venv-sekmet/bin/pip install -q --upgrade pip >/dev/null
  .venv-sekmet/bin/pip install -q "sekmet-fhir==0.1.1"
fi

# HealthChain 0.16.1 (PyPI), an independent CDS Hooks client, in its own environment: its pins (httpx < 0.28,
# fhir.resources < 8.2, fastapi < 0.138) clash with ours. tests/integration/test_healthchain_client.py drives it.
if [ ! -x .venv-healthchain/bin/python ] || ! .venv-healthchain/bin/python -c "import healthchain, faker" 2>/dev/null; then
  "$PY" -m venv .venv-healthchain
  .venv-healthchain/bin/pip install -q --upgrade pip >/dev/null
  .venv-healthchain/bin/pip install -q "healthchain[sandbox]==0.16.1"
fi

# HAPI FHIR JPA server 8.8.0: HAPI's JPA libraries in a small Spring Boot app of ours (tools/hapi-fhir/),
# built once here (cached); the integration tests start it. Without Java and Maven the HAPI runs are skipped, loudly.
if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then
  scripts/hapi-fhir.sh build
  # Synthea 3.3.0 and its libraries (tools/synthea/pom.xml; ~200 MB once), for the Synthea-through-HAPI tests
  if [ ! -f tools/synthea/target/lib/synthea-3.3.0.jar ]; then
    mvn -q -B -f tools/synthea/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/tools/synthea/target/lib"
  fi
else
  echo "fhir-servers: HAPI FHIR and SYNTHEA SKIPPED: Java 17+ and Maven are needed to build tools/hapi-fhir; the integration"
  echo "fhir-servers: tests run against sekmet-fhir only on this machine."
fi
