#!/usr/bin/env bash
# Third-party checks of the OpenAPI document a running `creapic serve` publishes (issue 16 item 4):
# tools no one here wrote, installed from the registries at pinned versions, each failing the run
# on an error or a warning.
#   validator   openapi-spec-validator (PyPI), against the OpenAPI 3.1 schema, every error listed
#   python      openapi-python-client (PyPI) generates a client, with no warning; smoke.py calls
#               the server through it and checks the typed results
#   typescript  openapi-typescript (npm) generates types, with no warning; tsc --noEmit is clean;
#               smoke.ts calls the server through openapi-fetch and checks the typed results
#   lint        Redocly CLI (npm), recommended ruleset: no errors (warnings are printed)
# The smoke scripts call every seed endpoint: generate, bulk submit + poll, render + poll (a layer
# from the generated image and an inline PNG), organization create.
# Pins: .ci/openapi/requirements.txt + constraints.txt (PyPI), .ci/openapi/package-lock.json (npm).
# Installs into /tmp (a virtual environment keyed by the pins) and .ci/openapi/node_modules;
# caches only under /tmp. Usage: .ci/openapi-checks.sh PATH_TO_CREAPIC_BINARY
set -euo pipefail
bin="$(realpath "${1:?path to the creapic binary}")"
ci="$(cd "$(dirname "$0")" && pwd)"
oa="$ci/openapi"
export PIP_CACHE_DIR=/tmp/creapic-ci-pip-cache PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_cache=/tmp/creapic-ci-npm-cache npm_config_update_notifier=false
export npm_config_audit=false npm_config_fund=false
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true

# `step NAME COMMAND...`: runs COMMAND (errexit on) under a header and reports how long it took;
# a failing check is recorded and the next one still runs, so one run shows every finding.
failed=()
step() {
  local name="$1" start=$SECONDS rc
  shift
  echo "-- openapi: $name"
  set +e
  (set -e; "$@")
  rc=$?
  set -e
  if ((rc == 0)); then
    echo "   ($name: $((SECONDS - start)) s)"
  else
    echo "   ($name: FAILED after $((SECONDS - start)) s)"
    failed+=("$name")
  fi
}

# `quiet_or_fail TOOL EXPECTED_REGEX COMMAND...`: runs COMMAND; fails if it fails or prints any
# line (stdout or stderr) not matching EXPECTED_REGEX — a generator's warning is a failure.
quiet_or_fail() {
  local tool="$1" expected="$2" out
  shift 2
  out="$(mktemp)"
  if ! "$@" >"$out" 2>&1; then
    cat "$out"
    echo "$tool failed" >&2
    return 1
  fi
  if grep -Evq "$expected" "$out"; then
    cat "$out"
    echo "$tool printed more than its progress lines (above): warnings fail the check" >&2
    return 1
  fi
  cat "$out"
}

install_python() {
  local pins
  pins=$(cat "$oa/requirements.txt" "$oa/constraints.txt" | sha256sum | cut -c1-16)
  venv="/tmp/creapic-ci-openapi-venv-$pins"
  if [[ ! -f "$venv/.installed" ]]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$oa/requirements.txt" -c "$oa/constraints.txt"
    touch "$venv/.installed"
  fi
  "$venv/bin/openapi-spec-validator" --version
  "$venv/bin/openapi-python-client" --version
}

install_node() {
  (cd "$oa" && npm ci --ignore-scripts --no-progress --loglevel=error)
  (cd "$oa" && npx --no-install openapi-typescript --version && npx --no-install tsc --version \
    && npx --no-install redocly --version 2>/dev/null | tail -1)
}

validate() {
  "$venv/bin/openapi-spec-validator" --schema 3.1 --validation-errors all --subschema-errors all \
    "$work/openapi.json"
}

python_client() {
  quiet_or_fail openapi-python-client '^(Generating .*)?$' \
    env PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate \
    --path "$work/openapi.json" --meta none --output-path "$work/python/creapic_api_client" \
    --config "$oa/python-client.yaml" --fail-on-warning
  PYTHONPATH="$work/python" "$venv/bin/python" "$oa/smoke.py" creapic_api_client "$base" "$key"
}

typescript_client() {
  mkdir -p "$oa/generated"
  (cd "$oa" && quiet_or_fail openapi-typescript '^(✨ openapi-typescript .*|🚀 .* → .*)?$' \
    npx --no-install openapi-typescript "$work/openapi.json" -o generated/api.d.ts)
  (cd "$oa" && quiet_or_fail tsc '^$' npx --no-install tsc -p tsconfig.json --noEmit)
  (cd "$oa" && CREAPIC_BASE="$base" CREAPIC_KEY="$key" npx --no-install tsx smoke.ts)
}

lint() {
  (cd "$oa" && npx --no-install redocly lint "$work/openapi.json" --config redocly.yaml)
}

# shellcheck source=serve.sh
source "$ci/serve.sh"
work="$(mktemp -d /tmp/creapic-openapi-checks.XXXXXX)"
trap 'stop_creapic; rm -rf "$work"' EXIT
echo "-- openapi: install (PyPI, npm)"
start=$SECONDS
install_python
install_node
echo "   (install: $((SECONDS - start)) s)"
serve_creapic "$bin"
# Pretty-printed, so the tools' line numbers point somewhere readable.
curl -sSf "$base/api/openapi" | python3 -m json.tool >"$work/openapi.json"
step validator validate
step python python_client
step typescript typescript_client
step lint lint
if ((${#failed[@]})); then
  echo "-- openapi: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "-- openapi: all third-party checks passed"
