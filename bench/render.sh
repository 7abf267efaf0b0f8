#!/usr/bin/env bash
# Offline renderer images/s per quality and the end-to-end latency of a 100-prompt bulk job
# (submit → completed, runner + in-memory store); rewrites only the "Generation pipeline"
# section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p creapic-server-kit --bench render -- --noplot "$@"
dir="${CARGO_TARGET_DIR:-target}/criterion"
python3 - "$dir" <<'PY' | python3 bench/section.py docs/benchmarks.md "Generation pipeline"
import json, os, subprocess, sys
d = sys.argv[1]
def est(path):
    e = json.load(open(f"{d}/{path}/new/estimates.json"))
    m = e["median"]
    return m["point_estimate"], m["confidence_interval"]["lower_bound"], m["confidence_interval"]["upper_bound"]
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
print("Command: `bash bench/render.sh` (criterion, `cargo bench -p creapic-server-kit --bench render`).")
load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
print(f"Machine: {os.cpu_count()} cores, {cpu}; {rustc}; 1-minute load average {load} when the run ended")
print("(other work on the machine shares the cores and slows every number).")
print()
print("The offline renderer is not a model: it draws a deterministic abstract image from the JSON")
print("prompt. One image = draw + PNG encode (fast compression), 1:1, on one core. Sizes:")
print("standard 1024×1024, hd 2048×2048.")
print()
print("| offline renderer | median per image | 95% CI | images/s (one core) |")
print("|---|---|---|---|")
for q, size in [("standard", "1024×1024"), ("hd", "2048×2048")]:
    ns, lo, hi = est(f"offline_render/{q}")
    print(f"| {q} ({size}) | {ns/1e6:.1f} ms | {lo/1e6:.1f}–{hi/1e6:.1f} ms | {1e9/ns:.1f} |")
print()
ns, lo, hi = est("bulk_job/100_prompts_standard")
print("End to end: submit a 100-prompt bulk job (standard quality, rule composer, offline")
print("renderer, in-memory store and media) and poll every 2 ms until it is completed; the runner")
print("holds up to 4 jobs and 4 generations at once (the machine has the cores it has).")
print()
print("| bulk job | median submit → completed | 95% CI | images/s |")
print("|---|---|---|---|")
print(f"| 100 prompts, standard | {ns/1e9:.2f} s | {lo/1e9:.2f}–{hi/1e9:.2f} s | {100/(ns/1e9):.1f} |")
PY
echo "updated docs/benchmarks.md"
