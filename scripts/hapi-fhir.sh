#!/usr/bin/env bash
# A local HAPI FHIR JPA server (R4, in-memory H2) without Docker: HAPI's JPA libraries from Maven Central in
# a small Spring Boot application of ours (tools/hapi-fhir/).
#
#   scripts/hapi-fhir.sh build            build the server once (cached until its sources change)
#   scripts/hapi-fhir.sh start [PORT]     start it on 127.0.0.1:PORT (default 8080), base /fhir; wait until it answers
#   scripts/hapi-fhir.sh stop [PORT]      stop the server this script started on PORT (only that process)
#
# HAPI_HEAP (default 2g) sets the heap; HAPI_CORS_ORIGINS (Spring origin patterns, comma-separated; default
# loopback pages on any port) the origins whose pages may read it from a browser.
# Needs Java 17+ and Maven. The first build downloads about 540 MB of Maven artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=tools/hapi-fhir
JAR=$TOOL/target/hapi-fhir-local.jar
HEAP=${HAPI_HEAP:-2g}   # Synthea-size transactions (5,000-9,000 entries) fail at 512 MB
# CORS: pages on this machine (any port) by default, so a browser EHR or a local CDS Hooks sandbox can read it
CORS=${HAPI_CORS_ORIGINS:-http://localhost:[*],http://127.0.0.1:[*],http://[::1]:[*]}

build() {
  command -v java >/dev/null && command -v mvn >/dev/null || { echo "hapi-fhir: Java and Maven are needed" >&2; return 1; }
  if [ -f "$JAR" ] && [ -z "$(find "$TOOL/pom.xml" "$TOOL/src" -newer "$JAR" -print -quit)" ]; then
    return 0
  fi
  echo "hapi-fhir: building $JAR (first time: Maven downloads HAPI FHIR and Spring Boot)..." >&2
  (cd "$TOOL" && mvn -q -B -DskipTests package) >&2
}

start() {
  local port=${1:-8080} pidfile=var/hapi-fhir-${1:-8080}.pid log=var/hapi-fhir-${1:-8080}.log
  build
  mkdir -p var
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "hapi-fhir: already running on port $port (pid $(cat "$pidfile"))" >&2
  else
    nohup java -Xmx"$HEAP" -jar "$JAR" --server.address=127.0.0.1 --server.port="$port" \
      --trialmatcher.cors.origins="$CORS" >"$log" 2>&1 &
    echo $! >"$pidfile"
  fi
  for _ in $(seq 1 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/fhir/metadata"; then
      echo "hapi-fhir: http://127.0.0.1:$port/fhir (pid $(cat "$pidfile"), log $log)"
      return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "hapi-fhir: exited; see $log" >&2; return 1; }
    sleep 1
  done
  echo "hapi-fhir: no answer on port $port after 150 s; see $log" >&2
  return 1
}

stop() {
  local pidfile=var/hapi-fhir-${1:-8080}.pid
  [ -f "$pidfile" ] || { echo "hapi-fhir: nothing started on port ${1:-8080} by this script" >&2; return 0; }
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
  echo "hapi-fhir: stopped (pid $pid)"
}

case "${1:-}" in
  build) build ;;
  start) start "${2:-8080}" ;;
  stop) stop "${2:-8080}" ;;
  *) echo "usage: scripts/hapi-fhir.sh build | start [PORT] | stop [PORT]" >&2; exit 2 ;;
esac
