#!/usr/bin/env bash
# The Go peer's checks as `npm test` runs them: gofmt -l clean, go vet, go test. Modules come
# from the Go module proxy on first use (go.sum is committed).
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if ! [ -x "$GO" ] && ! command -v "$GO" >/dev/null 2>&1; then
  echo "go not found: install Go >= 1.26 (see scripts/bootstrap.sh)" >&2
  exit 1
fi
unformatted="$("$("$GO" env GOROOT)/bin/gofmt" -l .)"
if [ -n "$unformatted" ]; then
  echo "gofmt -l: not formatted:" >&2
  echo "$unformatted" >&2
  exit 1
fi
"$GO" vet ./...
CGO_ENABLED=0 "$GO" test ./...
