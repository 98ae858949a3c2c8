#!/usr/bin/env bash
# Finding 4 of issue 13 as a benchmark: one enrolled device floods the collector from many
# parallel streams of maximum-size messages while ordinary agents keep sending. Records the
# ordinary agents' acknowledgement latency (target p99 < 1 s), the collector's peak RSS (target
# < 512 MiB) and how much of the flood reached the store, on the collector's default settings.
#
#   tests/bench/flood.sh [seconds] [streams]      (prints a Markdown section on stdout)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
secs="${1:-60}"; streams="${2:-32}"; honest=4
cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
bin="$root/target/release"
work="$(mktemp -d /tmp/invigilator-flood.XXXXXX)"
cpid=""
cleanup() { [ -n "$cpid" ] && kill "$cpid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=50091
"$bin/invigilator-collector" init --data-dir "$work/c" >/dev/null
"$bin/invigilator-collector" serve --data-dir "$work/c" --grpc-listen "127.0.0.1:$port" --http-listen 127.0.0.1:0 >"$work/c.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do grep -q listening "$work/c.log" && break; sleep 0.1; done
url="https://localhost:$port"
token=$("$bin/invigilator-collector" token create --data-dir "$work/c" --group staff --uses $((honest + 1)))
"$bin/invigilator-loadgen" --collector "$url" --dir "$work/agents" enroll --token "$token" --agents $((honest + 1)) >&2
rss0=$(awk '/VmRSS/ {print $2}' "/proc/$cpid/status")
out=$("$bin/invigilator-loadgen" --collector "$url" --dir "$work/agents" flood --streams "$streams" --honest "$honest" --seconds "$secs")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$cpid/status")
db=$(du -sk "$work/c" | cut -f1)
alerts=$("$bin/invigilator-collector" alerts list --data-dir "$work/c" --json | python3 -c '
import json,sys
a=[x for x in json.load(sys.stdin) if x["rule"]=="agent.quota"]
print("; ".join(x["matched"] for x in a) or "none")')
cat <<MD
## Flood from one device (tests/bench/flood.sh $secs $streams), run of $(date -u +%Y-%m-%dT%H:%MZ)

Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r). Release build, collector on its default settings (quotas: 16 MiB/min, 64 MiB burst, 256 MiB/day, 12 streams/min per agent), load generator on the same cores.

- $out
- collector RSS: $((rss0 / 1024)) MiB before, **$((hwm / 1024)) MiB peak** (target < 512 MiB)
- data directory after the run: $((db / 1024)) MiB
- quota alerts raised for the flooding agent: $alerts
MD
