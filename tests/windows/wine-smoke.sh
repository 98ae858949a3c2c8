#!/usr/bin/env bash
# Smoke test of the Windows agent under Wine, against a Linux collector on loopback:
#
#   deploy/windows/build.sh && cargo build -p invigilator-collector && tests/windows/wine-smoke.sh
#
# Starts the collector (target/debug/invigilator-collector init + serve), creates an enrolment
# token, enrols and runs the Windows agent under Wine, starts a Windows program named tor.exe,
# and passes when `alerts list --json` shows circumvention.tor from the Windows agent. Prints
# the exe's size and the resident memory of the agent's Wine process. When an MSI newer than the
# exe is there (deploy/windows/package.sh), the agent is installed from it with msiexec /qn.
#
# Run by tests/run.sh (and so by .ci/run). Needs wine (Debian 12: 8.0; tests/setup.sh installs
# it) and the test-only bcryptprimitives.dll shim that build.sh makes (Wine 8 lacks ProcessPrng).
# Environment: KEEP=1 keeps the work directory; SETTLE (10) seconds before measuring memory.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

exe="$root/target/windows/x86_64-pc-windows-gnu/release/invigilator-agent.exe"
shim="$root/target/windows/windows-test/bcryptprimitives.dll"
collector="$root/target/debug/invigilator-collector"
for f in "$exe" "$shim" "$collector"; do
  [ -f "$f" ] || { echo "wine-smoke: missing $f (run deploy/windows/build.sh; cargo build -p invigilator-collector)" >&2; exit 2; }
done
command -v wine >/dev/null || { echo "wine-smoke: wine is not installed (apt-get install wine)" >&2; exit 2; }

work="$(mktemp -d /tmp/wine-smoke.XXXXXX)"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Only this test's own Wine prefix: its wineserver and every Windows process in it.
  WINEPREFIX="$work/prefix" wineserver -k 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    echo "--- collector log"; tail -n 30 "$work/collector.log" 2>/dev/null || true
    echo "--- agent log"; tail -n 40 "$work/agent.log" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

export WINEPREFIX="$work/prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" WINEARCH=win64
wait_for() { # seconds, what, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "wine-smoke: timed out waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

echo "wine-smoke: preparing the Wine prefix"
wineboot -i >/dev/null 2>&1 || true

# The agent: installed silently from the MSI when deploy/windows/package.sh has made one,
# otherwise the bare exe. Either way the test-only shim goes beside it.
msi=$(ls -t "$root"/target/windows/invigilator-agent-*-x64.msi 2>/dev/null | head -n1 || true)
if [ -n "$msi" ] && [ "$msi" -nt "$exe" ]; then
  echo "wine-smoke: installing $(basename "$msi") silently (msiexec /i ... /qn)"
  wine msiexec /i "$(winepath -w "$msi")" /qn
  bin="$WINEPREFIX/drive_c/Program Files/Invigilator"
  installed() { [ -f "$bin/invigilator-agent.exe" ]; }
  wait_for 30 "the MSI to install $bin/invigilator-agent.exe" installed
  cmp -s "$bin/invigilator-agent.exe" "$exe" || { echo "wine-smoke: the installed exe is not the one built" >&2; exit 1; }
  cp "$shim" "$bin/"
else
  [ -n "$msi" ] && echo "wine-smoke: $(basename "$msi") is older than the exe: testing the bare exe"
  bin="$work/bin"
  mkdir -p "$bin"
  cp "$exe" "$shim" "$bin/"
fi
# A Windows program named tor.exe.
x86_64-w64-mingw32-gcc -O2 -s -o "$work/tor.exe" tests/windows/tor.c
wine "$bin/invigilator-agent.exe" --version

# Collector on loopback, on free ports.
data="$work/collector"
"$collector" init --data-dir "$data" >/dev/null
"$collector" serve --data-dir "$data" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  >/dev/null 2>"$work/collector.log" &
pids+=($!)
listening() { grep -m1 '^invigilator-collector listening:' "$work/collector.log" >/dev/null; }
wait_for 30 "the collector to listen" listening
grpc=$(grep -m1 '^invigilator-collector listening:' "$work/collector.log" | tr ' ' '\n' | sed -n 's/^grpc=//p')
port="${grpc##*:}"
token=$("$collector" token create --data-dir "$data" --group shared-ict-suite)

# Enrol and run the Windows agent; its state directory is a Windows path (Z: is /).
state_unix="$work/agent-state"
state_win="Z:${state_unix//\//\\}"
enrolled=$(wine "$bin/invigilator-agent.exe" enroll --collector "https://localhost:$port" \
  --token "$token" --state-dir "$state_win")
echo "wine-smoke: $enrolled"
agent_id=$(sed -n 's/^enrolled as agent \([^ ]*\) .*/\1/p' <<<"$enrolled")
[ -n "$agent_id" ] || { echo "wine-smoke: enrol printed no agent id" >&2; exit 1; }

INVIGILATOR_LOG=info wine "$bin/invigilator-agent.exe" run --state-dir "$state_win" \
  >"$work/agent.log" 2>&1 &
pids+=($!)
running() { grep -qs 'process source running' "$work/agent.log"; }
wait_for 60 "the agent to start its process source" running
sleep 2 # past the poll source's baseline scan

wine "$work/tor.exe" &
pids+=($!)

tor_alert() {
  "$collector" alerts list --data-dir "$data" --json 2>/dev/null \
    | python3 -c '
import json, sys
agent = sys.argv[1]
alerts = json.load(sys.stdin)
sys.exit(0 if any(a["rule"] == "circumvention.tor" and a["agent_id"] == agent for a in alerts) else 1)
' "$agent_id"
}
wait_for 60 "the circumvention.tor alert from agent $agent_id" tor_alert
echo "wine-smoke: circumvention.tor alert delivered by the Windows agent $agent_id"
"$collector" alerts list --data-dir "$data" --json | python3 -c '
import json, sys
for a in json.load(sys.stdin):
    if a["rule"] == "circumvention.tor":
        print("  alert:", a["rule"], a["severity"], a["hostname"], "|", a["summary"])'

# Memory: the Wine process running the agent, next to a program that does nothing under the
# same Wine (tor.exe is asleep): the difference is what the agent itself costs.
sleep "${SETTLE:-10}"
wine "$work/tor.exe" & # a fresh idle one, alive for 10 s
pids+=($!)
sleep 3
rss() { # pattern -> "total anon file" in KiB, for the largest matching process
  local best="0 0 0" pid
  for pid in $(pgrep -f "$1" || true); do
    local line
    line=$(awk '/^VmRSS:/ {t=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print t+0, a+0, f+0}' "/proc/$pid/status" 2>/dev/null || echo "0 0 0")
    [ "${line%% *}" -gt "${best%% *}" ] && best=$line
  done
  echo "$best"
}
read -r agent_rss agent_anon agent_file <<<"$(rss 'invigilator-agent.exe run')"
read -r idle_rss idle_anon idle_file <<<"$(rss 'tor\.exe')"
size=$(stat -c %s "$exe")
echo "wine-smoke: exe $size bytes ($(( size / 1024 / 1024 )) MiB)"
echo "wine-smoke: agent under Wine: RSS ${agent_rss} KiB (anon ${agent_anon}, file ${agent_file})"
echo "wine-smoke: idle program under Wine: RSS ${idle_rss} KiB (anon ${idle_anon}, file ${idle_file})"
echo "wine-smoke: agent's own share: $(( (agent_rss - idle_rss) / 1024 )) MiB RSS, $(( (agent_anon - idle_anon) / 1024 )) MiB anonymous"
echo "wine-smoke: PASS"
