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
  echo "bootstrap: installing npm packages from package-lock.json"
  # `npm ci` refuses a lockfile that lacks other platforms' optional binaries (biome, anvil,
  # litesvm ship one package per OS); registry mirrors that carry only linux-x64 produce exactly
  # such a lockfile. `npm install` installs the same locked versions and tolerates it.
  if ! npm ci --no-audit --no-fund --loglevel=error 2>/dev/null; then
    echo "bootstrap: npm ci refused the lockfile; installing the locked versions with npm install"
    npm install --no-audit --no-fund --loglevel=error
  fi
fi

# Debian packages: command -> package
declare -A APT=(
  [redis-server]=redis-server
  [tinyproxy]=tinyproxy
  [curl]=curl
  [chromium]=chromium
  [openssl]=openssl
  [jq]=jq
  [ss]=iproute2
)
missing=()
for cmd in "${!APT[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/usr/bin/$cmd" ]; then
    missing+=("${APT[$cmd]}")
  fi
done
# The relay is deployed on jemalloc (deploy/, docs/adr/0034); the bench runs it so and a deploy test
# checks the loader finds it. A library, not a command: asked of the loader's cache.
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so\.2 '; then
  missing+=(libjemalloc2)
fi
# The clock-skew tests run a real process with its host clock moved (libfaketime, preloaded by path).
if ! compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null; then
  missing+=(libfaketime)
fi
# The OpenAPI fuzz test installs schemathesis (PyPI) into a venv: python3 with venv and ensurepip.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
fi
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

# Go (peer-go/, the Go peer): `npm test` runs its gofmt/vet/tests. Not a Debian package here: the
# toolchain comes from go.dev (Go >= 1.26); /usr/local/go/bin is where its tarball installs.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "bootstrap: Go is missing: the Go peer's checks in \`npm test\` will fail." >&2
  echo "bootstrap: install Go >= 1.26 from https://go.dev/dl/ into /usr/local/go (or put go on PATH)." >&2
fi
