#!/usr/bin/env bash
# Builds the Node processes' image (deploy/Dockerfile) and runs test/deploy-production.test.ts with
# the relay, gateway and prober inside it: production mode, TLS Redis, a customer request end to
# end. Needs a Docker daemon; not part of `npm test` (CI machines have none).
#   bash scripts/check-image.sh [tag]        (default peerproxy-node:check)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-peerproxy-node:check}"
docker info > /dev/null 2>&1 || { echo "check-image: no Docker daemon answers (docker info)" >&2; exit 2; }
# Host networking for the build's npm and apt downloads: works where the default bridge is off too.
docker build --network host -f deploy/Dockerfile -t "$tag" .
PEERPROXY_TEST_IMAGE="$tag" npm test -- test/deploy-production.test.ts
