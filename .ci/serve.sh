# Sourced by .ci/schemathesis.sh and .ci/openapi-checks.sh: a `creapic serve` to test against.
# `serve_creapic BIN [SERVE_ARGS...]` makes a fresh data directory, an organization with
# 1,000,000 credits, a test-mode key with every scope and a dashboard token, starts the server on
# a free loopback port and sets: data (the directory), org, key, token, base (http://127.0.0.1:PORT)
# and pid. The caller's EXIT trap calls stop_creapic (it stops the server and removes the
# directory; harmless before serve_creapic ran).
serve_creapic() {
  local bin="$1"
  shift
  data="$(mktemp -d)"
  org=$("$bin" --data-dir "$data" org create --name "CI checks" --owner owner@example.com --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["organization"]["id"])')
  "$bin" --data-dir "$data" credits grant --org "$org" --amount 1000000 >/dev/null
  key=$("$bin" --data-dir "$data" key create --org "$org" --name ci-checks --test \
    --scopes IMAGE_GENERATION,SCENE_RENDER,ORGANIZATION_WRITE --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  token="ci-$(date +%s%N)"
  CREAPIC_DASHBOARD_TOKEN="$token" RUST_LOG=warn "$bin" --data-dir "$data" serve --dev-dashboard-token \
    --listen 127.0.0.1:0 "$@" 2>"$data/serve.log" &
  pid=$!
  base=""
  for _ in $(seq 1 100); do
    base=$(sed -n 's/^creapic listening on //p' "$data/serve.log" | head -1)
    [[ -n "$base" ]] && break
    sleep 0.2
  done
  [[ -n "$base" ]] || { cat "$data/serve.log"; echo "creapic serve did not start" >&2; exit 1; }
}

stop_creapic() {
  if [[ -n "${pid:-}" ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [[ -n "${data:-}" ]] && rm -rf "$data"
}
