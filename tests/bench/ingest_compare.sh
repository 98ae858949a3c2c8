#!/usr/bin/env bash
# Collector ingest, this tree beside an earlier commit's binary, in one run on this machine:
# the same loadgen (this tree's) against each collector in turn, alternating, each run on a
# fresh data directory. For checking that a change to the store or the committer costs nothing.
#
#   tests/bench/ingest_compare.sh REV [rounds]     (prints a Markdown section on stdout)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rev="${1:?usage: ingest_compare.sh REV [rounds]}"; rounds="${2:-3}"
work="$(mktemp -d /tmp/invigilator-ingestcmp.XXXXXX)"
cpid=""
cleanup() {
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
# shellcheck source=old_build.sh
. "$root/tests/bench/old_build.sh"
old="$(old_collector "$rev")"
new="$root/target/release/invigilator-collector"
lg="$root/target/release/invigilator-loadgen"

# run BIN PORT: one collector, 50 agents x 20000 events; prints loadgen's line.
run() {
  local d="$work/c$2"
  rm -rf "$d" "$work/sim$2"
  "$1" init --data-dir "$d" >/dev/null
  "$1" serve --data-dir "$d" --grpc-listen "127.0.0.1:$2" --http-listen 127.0.0.1:0 >"$d.log" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do grep -q listening "$d.log" && break; sleep 0.1; done
  local token
  token=$("$1" token create --data-dir "$d" --group pupils --uses 100 --ttl 1h)
  "$lg" --collector "https://localhost:$2" --dir "$work/sim$2" enroll --token "$token" --agents 50 >&2
  "$lg" --collector "https://localhost:$2" --dir "$work/sim$2" ingest --agents 50 --events 20000 --batch 1000 --window 4
  kill "$cpid"; wait "$cpid" 2>/dev/null || true; cpid=""
}

echo "### Collector ingest, $(git rev-parse --short HEAD) beside $(git rev-parse --short "$rev") ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo '```'
port=50200
for i in $(seq "$rounds"); do
  for which in old new; do
    port=$((port + 1))
    bin=$old; [ $which = new ] && bin=$new
    echo "$which: $(run "$bin" "$port")"
  done
done
echo '```'
