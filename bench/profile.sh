#!/usr/bin/env bash
# Instructions per request of the job-status route, counted by callgrind (stable from run to run,
# unlike requests/s on a shared machine): the bare axum handler, the kit as bench/http.sh measures
# it (`kit`: no subscriber, no metrics, a queued job), and the kit as `creapic serve` runs it
# (`serve`: fmt subscriber at info, Prometheus recorder, a finished job with signed links).
# Runs `cargo bench -p creapic-server-kit --bench status_loop` (creapic-server-kit/benches/
# status_loop.rs) under `valgrind --tool=callgrind`, collecting only its N measured requests.
# Environment: PROFILE_N (requests per mode, default 5000), PROFILE_MODES (default
# "bare kit serve"), PROFILE_OUT (where callgrind.out.MODE files go, default a temporary
# directory; read them with `callgrind_annotate --inclusive=yes`).
# Note: valgrind's CPU has no SHA extensions, so SHA-256 runs in software under it; the key digest
# (and, on a miss, link signing) counts several times what it costs on a CPU with SHA-NI.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update && apt-get install -y valgrind; }
n="${PROFILE_N:-5000}"
out="${PROFILE_OUT:-$(mktemp -d)}"
bin=$(cargo bench -p creapic-server-kit --bench status_loop --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "status_loop" and m.get("executable"):
        print(m["executable"])')
for mode in ${PROFILE_MODES:-bare kit serve}; do
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.$mode" --collect-atstart=no \
    --toggle-collect='status_loop::measured' "$bin" "$mode" "$n" >/dev/null 2>"$out/valgrind.$mode.log"
  ir=$(awk '/Collected :/ {print $NF}' "$out/valgrind.$mode.log")
  echo "PROFILE mode=$mode requests=$n instructions_per_request=$((ir / n))"
done
echo "callgrind files: $out"
