#!/usr/bin/env bash
# schemathesis against the OpenAPI document a running `creapic serve` publishes: a fresh data
# directory, an organization with credits, a real (test-mode) key and a dashboard login, then
# bounded property-based requests to every operation, and stateful sequences along the links
# schemathesis finds or infers (issue 16 item 5). The server runs with its DEFAULT rate limits:
# a 429 is a legitimate answer and must be one the document lists for that route. Fails on any
# 5xx, on any status, content type, header or body the document does not describe for the route,
# and on a deleted resource still served or a created one not found.
# Usage: .ci/schemathesis.sh PATH_TO_CREAPIC_BINARY
set -euo pipefail
bin="${1:?path to the creapic binary}"
version="4.32.5"
if ! schemathesis --version 2>/dev/null | grep -q "$version"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi
# shellcheck source=serve.sh
source "$(dirname "$0")/serve.sh"
trap 'stop_creapic' EXIT
serve_creapic "$bin"
timeout 600 schemathesis run "$base/api/openapi" \
  -H "Authorization: Bearer $key" \
  -H "x-dashboard-token: $token" \
  -H "x-dashboard-user: owner@example.com" \
  --phases examples,coverage,fuzzing,stateful \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,use_after_free,ensure_resource_availability \
  --max-examples 20 \
  --seed 1 \
  --no-color
