#!/usr/bin/env bash
# schemathesis against the OpenAPI document a running `creapic serve` publishes: a fresh data
# directory, an organization with credits, a real (test-mode) key and a dashboard login, then
# bounded property-based requests to every operation. Fails on any 5xx or any response that does
# not conform to the document. Usage: .ci/schemathesis.sh PATH_TO_CREAPIC_BINARY
set -euo pipefail
bin="${1:?path to the creapic binary}"
version="4.32.5"
if ! schemathesis --version 2>/dev/null | grep -q "$version"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi
data="$(mktemp -d)"
log="$data/serve.log"
cleanup() { [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
org=$("$bin" --data-dir "$data" org create --name "Schemathesis" --owner owner@example.com --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["organization"]["id"])')
"$bin" --data-dir "$data" credits grant --org "$org" --amount 1000000 >/dev/null
key=$("$bin" --data-dir "$data" key create --org "$org" --name schemathesis --test \
  --scopes IMAGE_GENERATION,SCENE_RENDER,ORGANIZATION_WRITE --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
token="schemathesis-$(date +%s%N)"
CREAPIC_DASHBOARD_TOKEN="$token" RUST_LOG=warn "$bin" --data-dir "$data" serve --listen 127.0.0.1:0 \
  --rate-limit-per-second 1000000 --rate-limit-burst 1000000 2>"$log" &
pid=$!
base=""
for _ in $(seq 1 100); do
  base=$(sed -n 's/^creapic listening on //p' "$log" | head -1)
  [[ -n "$base" ]] && break
  sleep 0.2
done
[[ -n "$base" ]] || { cat "$log"; echo "creapic serve did not start" >&2; exit 1; }
# The stateful phase would follow links schemathesis infers on its own; the coverage and fuzzing
# phases exercise every operation.
timeout 600 schemathesis run "$base/api/openapi" \
  -H "Authorization: Bearer $key" \
  -H "x-dashboard-token: $token" \
  -H "x-dashboard-user: owner@example.com" \
  --phases examples,coverage,fuzzing \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples 20 \
  --seed 1 \
  --no-color
