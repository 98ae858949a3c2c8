#!/usr/bin/env bash
# What scraping /metrics costs ingest: the same release collector with its metrics listener
# scraped every second (as Prometheus would, by curl so that Prometheus's own CPU is not
# counted) and not scraped, interleaved, each run on a fresh data directory; the loadgen
# beside it on the same cores. Prints a Markdown section with every run and the medians.
#
#   tests/bench/metrics_cost.sh [rounds]      (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rounds="${1:-5}"
work="$(mktemp -d /tmp/invigilator-metricscost.XXXXXX)"
cpid=""; spid=""
cleanup() {
  [ -n "$spid" ] && kill "$spid" 2>/dev/null
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
bin="$root/target/release/invigilator-collector"
lg="$root/target/release/invigilator-loadgen"

# run MODE PORT: one collector, 50 agents x 20000 events; prints the events/s.
run() {
  local mode=$1 port=$2 d="$work/c$2"
  "$bin" init --data-dir "$d" >/dev/null
  local mport=$((port + 1000))
  sed -i "s/^# listen = \"127.0.0.1:9464\"/listen = \"127.0.0.1:$mport\"/" "$d/collector.toml"
  "$bin" serve --data-dir "$d" --grpc-listen "127.0.0.1:$port" --http-listen 127.0.0.1:0 >"$d.log" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do grep -q listening "$d.log" && break; sleep 0.1; done
  local token
  token=$("$bin" token create --data-dir "$d" --group pupils --uses 100 --ttl 1h)
  "$lg" --collector "https://localhost:$port" --dir "$work/sim$port" enroll --token "$token" --agents 50 >&2
  if [ "$mode" = scraped ]; then
    ( while :; do curl -s -o /dev/null "http://127.0.0.1:$mport/metrics"; sleep 1; done ) &
    spid=$!
  fi
  local line
  line=$("$lg" --collector "https://localhost:$port" --dir "$work/sim$port" ingest --agents 50 --events 20000 --batch 1000 --window 4)
  if [ -n "$spid" ]; then kill "$spid"; wait "$spid" 2>/dev/null || true; spid=""; fi
  kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=""
  echo "$line" >&2
  echo "$line" | sed -E 's/.*= ([0-9]+) events\/s.*/\1/'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "## Ingest with /metrics scraped every second (\`tests/bench/metrics_cost.sh $rounds\`), run of $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "Release build (git $(git rev-parse --short HEAD)), $(nproc) cores, 50 agents x 20,000 process events, batches of 1,000, mTLS, fsync per commit, loadgen beside the collector."
echo
echo "| round | not scraped (events/s) | scraped every 1 s (events/s) |"
echo "|---|---|---|"
port=50300
: >"$work/plain"; : >"$work/scraped"
for i in $(seq "$rounds"); do
  port=$((port + 2)); a=$(run plain "$port")
  port=$((port + 2)); b=$(run scraped "$port")
  echo "$a" >>"$work/plain"; echo "$b" >>"$work/scraped"
  echo "| $i | $a | $b |"
done
mp=$(median <"$work/plain"); ms=$(median <"$work/scraped")
echo "| **median** | **$mp** | **$ms** |"
echo
awk -v p="$mp" -v s="$ms" 'BEGIN { printf "Scraped runs at %.1f%% of unscraped (median to median).\n", 100 * s / p }'
