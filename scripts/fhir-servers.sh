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

# HAPI FHIR JPA server: the issue asked for ca.uhn.hapi.fhir:hapi-fhir-jpaserver-starter from Maven Central.
# It is not published there (upstream issue hapifhir/hapi-fhir-jpaserver-starter#848; checked live below),
# so the suite cannot start it. Say so clearly, every run.
if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then
  if timeout 120 mvn -q -B dependency:get -Dtransitive=false \
       -Dartifact=ca.uhn.hapi.fhir:hapi-fhir-jpaserver-starter:5.4.0:pom >/dev/null 2>&1; then
    echo "fhir-servers: NOTE hapi-fhir-jpaserver-starter now resolves from Maven Central; wiring it into the suite is pending."
  else
    echo "fhir-servers: HAPI FHIR JPA server SKIPPED: ca.uhn.hapi.fhir:hapi-fhir-jpaserver-starter is not on Maven Central."
    echo "fhir-servers: integration tests run against sekmet-fhir; use FHIR_BASE_URL=<a HAPI base URL> to run them against HAPI."
  fi
else
  echo "fhir-servers: HAPI FHIR JPA server SKIPPED: no Java/Maven on this machine."
fi
