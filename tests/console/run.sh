#!/usr/bin/env bash
# Runs a console browser test (default console.test.mjs; mfa.test.mjs is the other) against the
# server at $PB_URL (see each file for its environment). Installs what it needs when missing: Debian's Chromium (the browser Playwright
# drives; no browser is downloaded) and the pinned playwright-core into node_modules here.
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing Chromium (Debian package chromium)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
stamp=node_modules/.package-lock.json   # written by npm on every install
if [[ ! -f $stamp || package-lock.json -nt $stamp || package.json -nt $stamp ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# A stuck step fails rather than hangs the suite.
exec node --test --test-concurrency=1 --test-timeout=300000 "${1:-console.test.mjs}"
