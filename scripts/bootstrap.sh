#!/usr/bin/env bash
# Installs what `npm start` and `npm test` need on a fresh Debian/Ubuntu machine: npm packages
# (Node 22 comes from the `node` devDependency) and Debian packages. Quick when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_npm=0
if [ ! -x node_modules/.bin/node ] || [ ! -f node_modules/.package-lock.json ]; then
  need_npm=1
elif [ package-lock.json -nt node_modules/.package-lock.json ]; then
  need_npm=1
fi
if [ "$need_npm" = 1 ]; then
  echo "bootstrap: installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

# Debian packages: command -> package
declare -A APT=(
  [redis-server]=redis-server
  [tinyproxy]=tinyproxy
  [curl]=curl
)
missing=()
for cmd in "${!APT[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
    missing+=("${APT[$cmd]}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts daemons on install; we run our own instances on our own ports.
    for svc in redis-server tinyproxy; do
      (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || service "$svc" stop >/dev/null 2>&1 || true
    done
  else
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
