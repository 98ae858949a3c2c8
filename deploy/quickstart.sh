#!/usr/bin/env bash
# Invigilator quickstart: builds the collector and the agent, then runs both on this machine on
# loopback with the embedded defaults, until Ctrl-C. Data stays in $INVIGILATOR_HOME
# (default: .invigilator/ in the repository), so a second run picks up where the first stopped.
#
#   deploy/quickstart.sh
#
# Environment: INVIGILATOR_HOME, GRPC_PORT (50051), HTTP_PORT (8080),
# INVIGILATOR_PROFILE (release; "debug" skips the optimised build).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
home="${INVIGILATOR_HOME:-$root/.invigilator}"
grpc_port="${GRPC_PORT:-50051}"
http_port="${HTTP_PORT:-8080}"
profile="${INVIGILATOR_PROFILE:-release}"

cd "$root"
if [ "$profile" = release ]; then
  cargo build --release --bins -p invigilator-collector -p invigilator-agent
else
  cargo build --bins -p invigilator-collector -p invigilator-agent
fi
bin="$root/target/$profile"
collector="$bin/invigilator-collector"
agent="$bin/invigilator-agent"
mkdir -p "$home"
data="$home/collector"
state="$home/agent"

if [ ! -f "$data/invigilator.db" ]; then
  "$collector" init --data-dir "$data" --server-name localhost --server-name 127.0.0.1
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; data kept in $home"
}
trap cleanup INT TERM EXIT

: > "$home/collector.log"
"$collector" serve --data-dir "$data" --grpc-listen "127.0.0.1:$grpc_port" \
  --http-listen "127.0.0.1:$http_port" >>"$home/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "invigilator-collector listening" "$home/collector.log" && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$home/collector.log"; exit 1; }
  sleep 0.1
done

if [ ! -f "$state/agent.toml" ]; then
  token="$("$collector" token create --data-dir "$data" --group staff --ttl 10m)"
  "$agent" enroll --collector "https://localhost:$grpc_port" --token "$token" --state-dir "$state"
fi
if [ "$(id -u)" != 0 ]; then
  echo "note: not root, so the agent polls /proc instead of using the kernel's proc connector;"
  echo "      very short-lived programs can be missed. Run with sudo to see every exec."
fi
"$agent" run --state-dir "$state" >>"$home/agent.log" 2>&1 &
pids+=($!)

cat <<MSG

Invigilator is running on this machine.
  collector: gRPC 127.0.0.1:$grpc_port (mutual TLS)
  console:   http://127.0.0.1:$http_port/  user "admin", first password in
             $data/initial-admin-password (you choose a new one at first log-in)
  data:      $data   (database, CA, collector.toml, policy.toml)
  agent:     $state  (key, certificates, spool)
  logs:      $home/collector.log, $home/agent.log

Try it: start a program named like a circumvention tool, then list the alerts:
  cp /bin/sleep /tmp/tor && /tmp/tor 1
  $collector alerts list --data-dir $data --json
  $collector events list --data-dir $data --json --kind process --limit 20
  $collector agents list --data-dir $data --json

Ctrl-C stops both.
MSG
wait
