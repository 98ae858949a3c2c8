#!/usr/bin/env bash
# Collector ingest, this tree beside an earlier commit's binary, in one run on this machine:
# the same loadgen (this tree's) against each collector in turn, alternating, each run on a
# fresh data directory. For checking that a change to the store or the committer costs nothing.
# A third row in each round runs this tree's collector on PostgreSQL (a server of its own from
# tests/postgres.sh, fsync on, a fresh database per run).
#
#   tests/bench/ingest_compare.sh REV [rounds]     (prints a Markdown section on stdout)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rev="${1:?usage: ingest_compare.sh REV [rounds]}"; rounds="${2:-3}"
work="$(mktemp -d /tmp/invigilator-ingestcmp.XXXXXX)"
cpid=""
pg_url=""
cleanup() {
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null
  wait 2>/dev/null || true
  [ -n "$pg_url" ] && "$root/tests/postgres.sh" stop "$work/pg" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
# shellcheck source=old_build.sh
. "$root/tests/bench/old_build.sh"
old="$(old_collector "$rev")"
new="$root/target/release/invigilator-collector"
lg="$root/target/release/invigilator-loadgen"

pg_url="$("$root/tests/postgres.sh" start "$work/pg")"

# run BIN PORT [pg]: one collector, 50 agents x 20000 events; prints loadgen's line.
run() {
  local d="$work/c$2"
  rm -rf "$d" "$work/sim$2"
  if [ "${3:-}" = pg ]; then
    psql -q "$pg_url" -c "CREATE DATABASE b$2" >&2
    "$1" init --data-dir "$d" --store-url "$pg_url dbname=b$2" >/dev/null
  else
    "$1" init --data-dir "$d" >/dev/null
  fi
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
  for which in old new new-postgres; do
    port=$((port + 1))
    bin=$old; [ $which != old ] && bin=$new
    engine=""; [ $which = new-postgres ] && engine=pg
    echo "$which: $(run "$bin" "$port" $engine)"
  done
done
echo '```'
