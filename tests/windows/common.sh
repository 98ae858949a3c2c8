# Shared by tests/windows/wine-smoke.sh and tests/bench/windows-memory.sh; sourced, not run.
# The caller sets `root` (the repository) before sourcing it, and `work` (its scratch
# directory) before calling prepare_prefix.

exe="$root/target/windows/x86_64-pc-windows-gnu/release/invigilator-agent.exe"
shim="$root/target/windows/windows-test/bcryptprimitives.dll"
collector="$root/target/debug/invigilator-collector"

# Fails (exit 2) naming the first of the files given that is missing.
require_files() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || { echo "missing $f (deploy/windows/build.sh, deploy/windows/package.sh; cargo build -p invigilator-collector)" >&2; exit 2; }
  done
}

# A fresh 64-bit Wine prefix in $work/prefix, exported for every wine command that follows,
# with the test-only shim in its system32 (services start from services.exe, not the exe's
# folder). Waits until the prefix is fully set up and its wineserver gone: an MSI installed
# while wineboot's services are still starting fails to find the service it has just created.
prepare_prefix() {
  export WINEPREFIX="$work/prefix" WINEDEBUG="${WINEDEBUG:--all}" WINEDLLOVERRIDES="mscoree,mshtml=" WINEARCH=win64
  wineboot -i >/dev/null 2>&1 || true
  wineserver -w
  cp "$shim" "$WINEPREFIX/drive_c/windows/system32/"
}

# A collector on loopback, on free ports, with its data in $1 and its log in $2. Sets
# collector_pid and grpc_port; fails after 30 s without it listening.
start_collector() {
  local data=$1 log=$2 line
  "$collector" init --data-dir "$data" >/dev/null
  "$collector" serve --data-dir "$data" --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    >/dev/null 2>"$log" &
  collector_pid=$!
  for _ in $(seq 60); do
    line=$(grep -s -m1 '^invigilator-collector listening:' "$log" || true)
    if [ -n "$line" ]; then
      grpc_port=$(tr ' ' '\n' <<<"$line" | sed -n 's/^grpc=.*:\([0-9]*\)$/\1/p')
      return 0
    fi
    sleep 0.5
  done
  echo "the collector did not start listening within 30 s (see $log)" >&2
  return 1
}
