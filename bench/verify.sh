#!/usr/bin/env bash
# Warm key verification vs one bare SHA-256 of the key, same run; rewrites the
# "Key verification" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p creapic-core --bench verify -- --noplot "$@"
dir="${CARGO_TARGET_DIR:-target}/criterion/verify"
python3 - "$dir" <<'PY' | python3 bench/section.py docs/benchmarks.md "Key verification"
import json, sys, platform, os, subprocess
d = sys.argv[1]
def ns(name):
    e = json.load(open(f"{d}/{name}/new/estimates.json"))
    return e["median"]["point_estimate"], e["median"]["confidence_interval"]
base, base_ci = ns("sha256_baseline")
warm, warm_ci = ns("warm_verify_and_scope")
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
print("Command: `bash bench/verify.sh` (criterion, `cargo bench -p creapic-core --bench verify`).")
print(f"Machine: {os.cpu_count()} cores, {cpu}; {rustc}.")
print()
print("Warm verification = parse the `Authorization` header, SHA-256 the key, look the digest up in")
print("the verification cache (10,001 keys cached), check expiry, note the use time, check a scope.")
print("Baseline = one bare SHA-256 of the same 72-byte key. Medians of the same run.")
print()
print("| measurement | median | 95% CI | ratio to baseline | target |")
print("|---|---|---|---|---|")
print(f"| bare SHA-256 of the key (baseline) | {base:.1f} ns | {base_ci['lower_bound']:.1f}–{base_ci['upper_bound']:.1f} ns | 1.00× | |")
r = warm / base
print(f"| warm verification + scope check | {warm:.1f} ns | {warm_ci['lower_bound']:.1f}–{warm_ci['upper_bound']:.1f} ns | {r:.2f}× | ≤ 3× {'✅' if r <= 3 else '❌'} |")
PY
echo "updated docs/benchmarks.md"
