#!/usr/bin/env bash
# Runs the JS SDK test against the server at $PB_URL (see backups.test.mjs for the env).
# Installs the pinned SDK locally first when node_modules is missing or older than the lockfile;
# `run.sh --install-only` only installs (for other scripts in this folder).
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.package-lock.json   # written by npm on every install
if [[ ! -f $stamp || package-lock.json -nt $stamp || package.json -nt $stamp ]]; then
  npm ci --no-audit --no-fund
fi

[[ ${1:-} == --install-only ]] && exit 0
exec node --test "$@" backups.test.mjs
