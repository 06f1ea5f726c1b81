#!/usr/bin/env bash
# Browser test dependencies: Debian's Chromium (/usr/bin/chromium) and playwright-core from npm
# (which downloads no browser of its own). Prints what it could not install; never fails the run:
# the browser test then skips and says why.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "browser-deps: could not install Debian's chromium package"
  else
    echo "browser-deps: chromium missing and apt-get needs root; the browser test will skip"
  fi
fi
if command -v npm >/dev/null 2>&1; then
  [ -d tests/browser/node_modules/playwright-core ] && [ -d tests/browser/node_modules/marked ] || npm ci --prefix tests/browser --no-audit --no-fund >/dev/null 2>&1 \
    || echo "browser-deps: npm ci failed in tests/browser"
else
  echo "browser-deps: npm missing; the browser test will skip"
fi
exit 0
