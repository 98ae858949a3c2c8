#!/usr/bin/env bash
# Memory of the Windows agent under Wine, taken apart: prints a Markdown table on stdout.
#
#   deploy/windows/build.sh && cargo build -p invigilator-collector && tests/bench/windows-memory.sh
#
# 1. The agent (`run`, enrolled against a Linux collector on loopback) with all sources, then
#    with browsing and/or USB switched off in agent.toml: RSS, private (anonymous) and
#    file-backed memory, threads, SETTLE (25) seconds after start.
# 2. tests/windows/load-dlls.c loading nothing, the DLLs the agent needs without sysinfo, those
#    plus shell32, and the agent's whole import list: what Wine charges for the DLLs alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
# shellcheck source=tests/windows/common.sh
. tests/windows/common.sh
require_files "$exe" "$shim" "$collector"
work="$(mktemp -d /tmp/windows-memory.XXXXXX)"
collector_pid=
cleanup() { [ -n "$collector_pid" ] && kill "$collector_pid" 2>/dev/null; wineserver -k 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "preparing the Wine prefix" >&2
prepare_prefix
cp "$exe" "$work/"
x86_64-w64-mingw32-gcc -O2 -s -o "$work/load-dlls.exe" tests/windows/load-dlls.c

start_collector "$work/data" "$work/collector.log"
token=$("$collector" token create --data-dir "$work/data" --group bench)
wine "$work/invigilator-agent.exe" enroll --collector "https://localhost:$grpc_port" --token "$token" \
  --state-dir 'C:\state' >/dev/null
state="$WINEPREFIX/drive_c/state"
cp "$state/agent.toml" "$work/agent.toml.orig"

status() { # pid -> "rss anon file threads" (KiB)
  awk '/^VmRSS:/ {t=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} /^Threads:/ {n=$2} END {print t, a, f, n}' "/proc/$1/status"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
row() { # label rss anon file threads
  echo "| $1 | $(mib "$2") | $(mib "$3") | $(mib "$4") | $5 |"
}

echo "| the agent (\`run\`), ${SETTLE:-25} s after start | RSS MiB | private MiB | file-backed MiB | threads |"
echo "|---|---|---|---|---|"
for off in "" "browsing" "usb" "browsing usb"; do
  python3 - "$work/agent.toml.orig" "$state/agent.toml" "$off" <<'PY'
import sys
src, dst, off = sys.argv[1:4]
out, section = [], ""
for line in open(src):
    if line.startswith("["):
        section = line.strip()[1:-1]
    if line.startswith("enabled") and section in off.split():
        line = "enabled = false\n"
    out.append(line)
open(dst, "w").write("".join(out))
PY
  wine "$work/invigilator-agent.exe" run --state-dir 'C:\state' >"$work/run.log" 2>&1 &
  sleep "${SETTLE:-25}"
  pid=$(pgrep -f 'invigilator-agent.exe run' | head -n1)
  read -r rss anon file threads <<<"$(status "$pid")"
  row "${off:+without }${off:-all sources}" "$rss" "$anon" "$file" "$threads"
  kill "$pid"; sleep 2; pkill -f 'invigilator-agent.exe run' || true; sleep 1
done

echo
echo "| a C program that only loads | RSS MiB | private MiB | file-backed MiB | threads |"
echo "|---|---|---|---|---|"
base="ws2_32 bcrypt advapi32 wtsapi32 setupapi"
for dlls in "" "$base" "$base shell32" "$base shell32 oleaut32 secur32 netapi32 pdh powrprof psapi"; do
  # shellcheck disable=SC2086
  wine "$work/load-dlls.exe" $dlls &
  sleep 8
  pid=$(pgrep -f 'load-dlls.exe' | head -n1)
  read -r rss anon file threads <<<"$(status "$pid")"
  row "${dlls:-nothing}" "$rss" "$anon" "$file" "$threads"
  kill "$pid" 2>/dev/null || true; sleep 1
done
