#!/usr/bin/env bash
# Invigilator quickstart: builds the collector and the agent, then runs both on this machine on
# loopback with the embedded defaults, until Ctrl-C. Data stays in $INVIGILATOR_HOME
# (default: .invigilator/ in the repository), so a second run picks up where the first stopped.
#
#   deploy/quickstart.sh
#
# Run it from a root shell or as a user who may sudo: it builds as the caller, then runs the
# collector and agent as root (through sudo when needed) so the agent can use the kernel's proc
# connector. INVIGILATOR_NO_SUDO=1 runs them as the caller instead (the agent then polls /proc).
#
# On the first run it imports the UT1 category-list snapshot in deploy/lists/ut1 (see its
# NOTICE), so the default policy's web rules (gambling, proxies, hacking ...) fire at once.
#
# Environment: INVIGILATOR_HOME, GRPC_PORT (50051), HTTP_PORT (8080),
# INVIGILATOR_PROFILE (release; "debug" skips the optimised build), INVIGILATOR_NO_SUDO.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
home="${INVIGILATOR_HOME:-$root/.invigilator}"
grpc_port="${GRPC_PORT:-50051}"
http_port="${HTTP_PORT:-8080}"
profile="${INVIGILATOR_PROFILE:-release}"

cd "$root"
if [ "${1:-}" != --built ]; then
  # The agent's eBPF exec source needs clang and the libelf and zlib headers to build; without
  # them the agent is built without it and uses the kernel's proc connector (tests/setup.sh, or
  # `apt-get install clang libelf-dev zlib1g-dev pkg-config`, brings them).
  features=()
  if ! command -v clang >/dev/null || [ ! -e /usr/include/libelf.h ] || [ ! -e /usr/include/zlib.h ]; then
    echo "quickstart: clang, libelf-dev or zlib1g-dev missing: building the agent without its eBPF exec source"
    features=(--no-default-features)
  fi
  if [ "$profile" = release ]; then
    cargo build --release --bins -p invigilator-collector -p invigilator-agent "${features[@]}"
  else
    cargo build --bins -p invigilator-collector -p invigilator-agent "${features[@]}"
  fi
  if [ "$(id -u)" != 0 ] && [ -z "${INVIGILATOR_NO_SUDO:-}" ] && command -v sudo >/dev/null; then
    echo "quickstart: running the collector and agent as root through sudo (INVIGILATOR_NO_SUDO=1 to stay $(id -un))"
    exec sudo INVIGILATOR_HOME="$home" GRPC_PORT="$grpc_port" HTTP_PORT="$http_port" \
      INVIGILATOR_PROFILE="$profile" "$0" --built
  fi
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
# Category lists: a snapshot kept in the repository, imported once; a later run keeps whatever
# the school imported since. Refresh: [lists] source in collector.toml, or `lists import`.
if [ ! -f "$data/lists/ordinary.lists" ]; then
  "$collector" lists import --data-dir "$data" --format ut1 "$root/deploy/lists/ut1"
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
  echo "      very short-lived programs can be missed. Run it as root (or without INVIGILATOR_NO_SUDO)."
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

Try it: start a program named like a circumvention tool, or visit a gambling site in a
browser on this machine (category lists: UT1 snapshot from deploy/lists/ut1, see its NOTICE;
refresh with [lists] source in collector.toml or \`lists import\`), then list the alerts:
  cp /bin/sleep /tmp/tor && /tmp/tor 1
  $collector alerts list --data-dir $data --json
  $collector events list --data-dir $data --json --kind process --limit 20
  $collector agents list --data-dir $data --json

Ctrl-C stops both.
MSG
wait
