#!/usr/bin/env bash
# Several collectors on one PostgreSQL database (issue 14), on this machine, release builds,
# a PostgreSQL server of its own (tests/postgres.sh, fsync on), a fresh database per run.
#
#   tests/bench/collectors.sh ingest [rounds]     events/s with 1 collector and with 3, side by side
#   tests/bench/collectors.sh latency             send-to-acknowledgement of alerting batches, 1 collector, 5k events/s
#   tests/bench/collectors.sh memory [times]      one collector's RSS after each of N ingest runs, then with 2 malloc arenas
#   tests/bench/collectors.sh connections [agents]   N agents (default 20000) connected across 3 collectors, RSS of each
#   tests/bench/collectors.sh fault [agents] [kills] [rate]
#       3 collectors, N agents (default 200) streaming; a random collector is killed with -9
#       every 6 s, K times (default 10), and restarted 1 s later. Then the database must hold
#       every agent's sequence exactly 1..=last and one alert per breach.
#
# Prints a Markdown section on stdout; progress goes to stderr.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
mode="${1:?usage: collectors.sh ingest|latency|memory|connections|fault ...}"
work="$(mktemp -d /tmp/invigilator-collectors.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$root/tests/postgres.sh" stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
col="$root/target/release/invigilator-collector"
lg="$root/target/release/invigilator-loadgen"
pg_url="$("$root/tests/postgres.sh" start "$work/pg")"
db=0

# fleet N: a new database and N collectors on it (the first made, the others joined), serving
# on ports 5030K; sets $urls (comma-separated) and $pids.
fleet() {
  db=$((db + 1))
  psql -q "$pg_url" -c "CREATE DATABASE f$db" >&2
  urls=""
  for k in $(seq "$1"); do
    local d="$work/f$db-c$k"
    if [ "$k" = 1 ]; then
      "$col" init --data-dir "$d" --store-url "$pg_url dbname=f$db" >/dev/null
    else
      "$col" init --data-dir "$d" --join "$work/f$db-c1" >/dev/null
    fi
    serve "$d" "$((50300 + db * 10 + k))"
    urls="$urls${urls:+,}https://localhost:$((50300 + db * 10 + k))"
  done
}

# serve DIR PORT: starts (or restarts) the collector of DIR; its pid goes to pid_of[PORT].
declare -A pid_of
serve() {
  : >"$1.log"
  "$col" serve --data-dir "$1" --grpc-listen "127.0.0.1:$2" --http-listen 127.0.0.1:0 >>"$1.log" 2>&1 &
  pid_of[$2]=$!
  pids+=("$!")
  for _ in $(seq 100); do grep -q listening "$1.log" && return; sleep 0.1; done
  echo "collector $1 did not start" >&2; cat "$1.log" >&2; exit 1
}

stop_fleet() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

enrol() { # enrol AGENTS SIMDIR
  local token
  token=$("$col" token create --data-dir "$work/f$db-c1" --group pupils --uses "$1" --ttl 1h)
  "$lg" --collector "$urls" --dir "$2" enroll --token "$token" --agents "$1" >&2
}

sql() { psql -qAt "$pg_url dbname=f$db" -c "$1"; }

rss_mib() { # the collectors' resident memory, MiB each
  for p in "${pids[@]}"; do
    awk '/VmRSS/ {printf "%d ", $2/1024}' "/proc/$p/status" 2>/dev/null || true
  done
}

head_line() {
  echo "### $1, $(git rev-parse --short HEAD) ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, PostgreSQL $(psql -qAt "$pg_url" -c 'SHOW server_version'))"
  echo
  echo '```'
}

case "$mode" in
ingest)
  head_line "Ingest with one collector and with three on one PostgreSQL"
  for i in $(seq "${2:-3}"); do
    for n in 1 3; do
      fleet "$n"
      enrol 60 "$work/sim$db"
      echo "$n collector(s): $("$lg" --collector "$urls" --dir "$work/sim$db" ingest --agents 60 --events 20000 --batch 1000 --window 4); RSS MiB: $(rss_mib)"
      stop_fleet
    done
  done
  echo '```'
  ;;
memory)
  # Whether a collector's memory after ingest is a peak kept or a leak: one collector takes the
  # ingest load N times in a row, its RSS read after each; then again with glibc held to two
  # malloc arenas.
  head_line "Collector RSS over repeated ingest on PostgreSQL"
  for arenas in default 2; do
    [ "$arenas" = 2 ] && export MALLOC_ARENA_MAX=2
    fleet 1
    line="malloc arenas $arenas: RSS MiB at start $(rss_mib)"
    for t in $(seq "${2:-3}"); do
      enrol 60 "$work/sim$db-$t"
      "$lg" --collector "$urls" --dir "$work/sim$db-$t" ingest --agents 60 --events 20000 --batch 1000 --window 4 >&2
      line="$line, after run $t: $(rss_mib)"
    done
    echo "$line"
    stop_fleet
    unset MALLOC_ARENA_MAX
  done
  echo '```'
  ;;
latency)
  head_line "Event-to-alert latency on PostgreSQL, one collector"
  fleet 1
  enrol 100 "$work/sim$db"
  "$lg" --collector "$urls" --dir "$work/sim$db" latency --agents 100 --rate 5000 --seconds 60
  echo "RSS MiB: $(rss_mib)"
  echo '```'
  ;;
connections)
  agents="${2:-20000}"
  # 20,000 connections need more open files than the default hard limit (20,000) allows the
  # load generator; root may raise it up to fs.nr_open. The collectors inherit it.
  ulimit -Hn 200000 && ulimit -n 200000
  head_line "$agents agents connected across 3 collectors on one PostgreSQL"
  fleet 3
  start=$(date +%s)
  enrol "$agents" "$work/sim$db"
  echo "enrolled $agents agents in $(( $(date +%s) - start )) s"
  # Two load generators, each with half the agents: one process's sockets stay well inside
  # its open-files limit (one process for 20,000 ran out of its own).
  half=$((agents / 2))
  "$lg" --collector "$urls" --dir "$work/sim$db" connections --first 0 --agents "$half" --hold 150 --sources 8 >"$work/conn1.out" 2>"$work/conn1.err" &
  load1=$!
  "$lg" --collector "$urls" --dir "$work/sim$db" connections --first "$half" --agents "$((agents - half))" --hold 150 --sources 8 >"$work/conn2.out" 2>"$work/conn2.err" &
  load2=$!
  # Sampled every 5 s while the load runs: the most connections each collector held at once
  # (its open files) and its RSS then.
  declare -A peak_fds peak_rss
  while kill -0 "$load1" 2>/dev/null || kill -0 "$load2" 2>/dev/null; do
    for p in "${pids[@]}"; do
      fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
      if [ "$fds" -gt "${peak_fds[$p]:-0}" ]; then
        peak_fds[$p]=$fds
        peak_rss[$p]=$(awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$p/status")
      fi
    done
    sleep 5
  done
  for k in 1 2; do
    grep "connected" "$work/conn$k.err" | tail -1
    grep "connection failed" "$work/conn$k.err" | head -3 || true
  done
  for p in "${pids[@]}"; do
    echo "collector pid $p: at most ${peak_fds[$p]:-0} open files, RSS then ${peak_rss[$p]:-0} MiB"
  done
  wait "$load1" "$load2"
  cat "$work/conn1.out" "$work/conn2.out"
  echo "agents recorded as heard from: $(sql "SELECT count(*) FROM agents WHERE last_seen IS NOT NULL")"
  echo '```'
  ;;
fault)
  agents="${2:-200}"; kills="${3:-10}"; rate="${4:-5000}"
  head_line "Kill -9 of collectors under load: 3 collectors, $agents agents, $kills kills"
  fleet 3
  enrol "$agents" "$work/sim$db"
  seconds=$((kills * 6 + 10))
  "$lg" --collector "$urls" --dir "$work/sim$db" fault --agents "$agents" --rate "$rate" --seconds "$seconds" >"$work/fault.out" &
  load=$!
  sleep 5
  for k in $(seq "$kills"); do
    port=$((50300 + db * 10 + (RANDOM % 3) + 1))
    kill -9 "${pid_of[$port]}"
    echo "kill $k: collector on $port" >&2
    sleep 1
    serve "$work/f$db-c$((port - 50300 - db * 10))" "$port"
    sleep 5
  done
  wait "$load"
  cat "$work/fault.out"
  sleep 2
  echo "agents with events: $(sql "SELECT count(DISTINCT agent_id) FROM events")"
  echo "agents whose sequence is not exactly 1..=last: $(sql "SELECT count(*) FROM (SELECT agent_id FROM events GROUP BY agent_id HAVING min(seq) <> 1 OR max(seq) <> count(*) OR count(DISTINCT seq) <> count(*)) bad")"
  echo "events stored: $(sql "SELECT count(*) FROM events")"
  # Repeats of one rule on one device within its window are one alert with a count.
  echo "breach events: $(sql "SELECT count(*) FROM events WHERE seq % 100 = 0"); counted in alerts: $(sql "SELECT coalesce(sum(count), 0) FROM alerts WHERE kind = 'process'")"
  echo "alerts per breach event, most: $(sql "SELECT coalesce(max(n), 0) FROM (SELECT count(*) n FROM alerts WHERE kind = 'process' GROUP BY agent_id, event_seq) x")"
  echo "RSS MiB after: $(rss_mib)"
  echo '```'
  ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
