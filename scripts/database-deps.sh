#!/usr/bin/env bash
# Database test dependencies: the PostgreSQL server binaries (initdb, pg_ctl) from Debian's postgresql
# package, so the store and the worklist are tested on PostgreSQL as well as SQLite (tests/conftest.py starts
# a server of its own in a temporary folder; nothing is left running). Prints what it could not install;
# never fails the run: those tests then skip and say why.
set -uo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
    || echo "database-deps: could not install Debian's postgresql package"
else
  echo "database-deps: PostgreSQL server binaries missing and apt-get needs root; PostgreSQL tests will skip"
fi
exit 0
