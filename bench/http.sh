#!/usr/bin/env bash
# The kit's authenticated job-status route vs a bare axum JSON handler, same binary, same run;
# rewrites the "HTTP (server kit)" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(cargo bench -p creapic-server-kit --bench http 2>/dev/null | grep '^BENCH')
echo "$out"
python3 - "$out" <<'PY' | python3 bench/section.py docs/benchmarks.md "HTTP (server kit)"
import os, re, sys
lines = dict()
for line in sys.argv[1].splitlines():
    parts = line.split()
    lines[parts[1].split("=")[0] if "=" in parts[1] else parts[1]] = dict(p.split("=") for p in parts[1:] if "=" in p) if "=" in parts[1] else dict(p.split("=") for p in parts[2:])
bare, kit = lines["bare"], lines["kit"]
ratio = float(kit["rps"]) / float(bare["rps"])
secs = os.environ.get("BENCH_SECS", "5"); conns = os.environ.get("BENCH_CONNECTIONS", "32")
print("Command: `bash bench/http.sh` (`cargo bench -p creapic-server-kit --bench http`).")
print(f"Machine: {os.cpu_count()} cores; load generator (reqwest, {conns} keep-alive connections, {secs} s per target) in the same process as both servers, so all three share the cores.")
print()
print("Route: `GET /api/playground/images/{jobId}` with a Bearer key (verification, scope, rate limit, request id, tracing span, metrics, store read, JSON view) vs a bare axum handler returning a JSON document of the same shape.")
print()
print("| server | requests/s | p50 | p99 | errors | ratio | target |")
print("|---|---|---|---|---|---|---|")
print(f"| bare axum JSON handler (baseline) | {float(bare['rps']):.0f} | {int(bare['p50_us'])/1000:.2f} ms | {int(bare['p99_us'])/1000:.2f} ms | {bare['errors']} | 1.00× | |")
print(f"| creapic kit, authenticated job status | {float(kit['rps']):.0f} | {int(kit['p50_us'])/1000:.2f} ms | {int(kit['p99_us'])/1000:.2f} ms | {kit['errors']} | {ratio:.2f}× | ≥ 0.85× {'✅' if ratio >= 0.85 else '❌'} |")
PY
echo "updated docs/benchmarks.md"
