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
hash=$(cat pyproject.toml native/pyproject.toml native/Cargo.toml native/Cargo.lock native/src/*.rs | sha256sum | cut -c1-16)
stamp=.venv/.installed-$hash${extras:+-$extras}
if [ ! -f "$stamp" ] && [ ! -f ".venv/.installed-$hash-test" ]; then  # the test install holds the service's
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".${extras:+[$extras]}"
  # The screen's byte scan, compiled (native/, Rust, built by maturin with cargo from rustup). Without it a
  # screen runs the same rules as regular expressions, several times slower; the tests hold the two equal,
  # so they need it.
  if [ -d "$HOME/.cargo/bin" ]; then PATH="$HOME/.cargo/bin:$PATH"; fi
  if command -v cargo >/dev/null; then
    .venv/bin/pip install -q ./native
  elif [ "$extras" = test ]; then
    echo "bootstrap.sh: the tests need cargo (https://rustup.rs) to build native/" >&2
    exit 1
  else
    echo "bootstrap.sh: no cargo: the screen's byte scan runs as regular expressions (slower)" >&2
  fi
  find .venv -maxdepth 1 -name '.installed-*' ! -name ".installed-$hash*" -delete  # an older pyproject's
  touch "$stamp"
fi
