#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of device input (fuzz/, cargo fuzz + libFuzzer,
# nightly): each target runs for SECONDS (default 600) from its committed seeds
# (fuzz/corpus/<target>) plus what earlier runs found (fuzz/work-corpus/<target>, not committed).
# Prints a Markdown row per target (executions, exec/s, coverage, crashes) and inserts a dated
# section into BENCHMARKS.md, filled in row by row, so a run that is cut short keeps what finished.
#
#   tests/bench/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]
#
# Environment: FUZZ_SANITIZER (default none; "address" works too, at about half the speed),
# FUZZ_NO_RECORD=1 to leave BENCHMARKS.md alone (CI's short pass), FUZZ_TIMEOUT (seconds one
# input may take, default 20). Runs at nice 19 with one build job: it shares the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
secs="${1:-600}"
shift || true
sanitizer="${FUZZ_SANITIZER:-none}"
timeout="${FUZZ_TIMEOUT:-20}"
all=(uevent proc_connector procfs etw_layout history history_rows url_normalise search_terms policy_file batch)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
export CARGO_BUILD_JOBS=1
log() { echo "[bench fuzz] $*" >&2; }

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "the nightly toolchain is missing" >&2; exit 2; }

log "building ${#targets[@]} targets (sanitizer $sanitizer)"
# `cargo fuzz build` takes one target or none (all of them).
if [ ${#targets[@]} = 1 ]; then one=("${targets[0]}"); else one=(); fi
nice -n 19 cargo +nightly fuzz build --sanitizer "$sanitizer" "${one[@]}" >&2

logs="$root/fuzz/target/bench-logs"
mkdir -p "$logs"
record=1
[ "${FUZZ_NO_RECORD:-0}" = 1 ] && record=0

header="| target | seconds | executions | exec/s | coverage (edges / features) | corpus (found / seeds) | crashes |"
rule="|---|---|---|---|---|---|---|"
if [ $record = 1 ]; then
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
  section="$(mktemp)"
  {
    echo "## Fuzzing: every parser of device input (tests/bench/fuzz.sh), run of $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Command: \`tests/bench/fuzz.sh $secs${*:+ $*}\` (cargo fuzz $(cargo fuzz --version 2>/dev/null | awk '{print $2}'), libFuzzer, $(rustup run nightly rustc --version | cut -d' ' -f2-), sanitizer $sanitizer, git $(git rev-parse --short HEAD)); machine: $(nproc) cores, $cpu, $(uname -sr); one target at a time on one core, at nice 19."
    echo
    echo "$header"
    echo "$rule"
  } >"$section"
  # The newest section goes above "## Earlier runs" (or at the end when there is none).
  marker="<!-- fuzz run $(date +%s) -->"
  if grep -q '^## Earlier runs' BENCHMARKS.md; then
    awk -v f="$section" -v m="$marker" '/^## Earlier runs/ && !done { while ((getline l < f) > 0) print l; print m; print ""; done=1 } { print }' \
      BENCHMARKS.md >BENCHMARKS.md.new
  else
    { cat BENCHMARKS.md; echo; cat "$section"; echo "$marker"; } >BENCHMARKS.md.new
  fi
  mv BENCHMARKS.md.new BENCHMARKS.md
  rm -f "$section"
fi
add_row() {
  echo "$1"
  if [ $record = 1 ]; then
    awk -v m="$marker" -v r="$1" '$0 == m { print r } { print }' BENCHMARKS.md >BENCHMARKS.md.new
    mv BENCHMARKS.md.new BENCHMARKS.md
  fi
}

echo "$header"
echo "$rule"
total_crashes=0
for t in "${targets[@]}"; do
  work="$root/fuzz/work-corpus/$t"
  artifacts="$root/fuzz/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  before=$(find "$artifacts" -type f | wc -l)
  seeds=$(find "$root/fuzz/corpus/$t" -type f | wc -l)
  log "$t: $secs s"
  start=$(date +%s)
  set +e
  nice -n 19 cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$work" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout="$timeout" -rss_limit_mb=4096 \
    >"$logs/$t.log" 2>&1
  status=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  if [ -z "$execs" ]; then
    # Stopped by a crash: the last status line's #N.
    execs=$(grep -Eo '^#[0-9]+' "$logs/$t.log" | tail -1 | tr -d '#')
  fi
  execs=${execs:-0}
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
  rate=${rate:-$(( execs / (elapsed > 0 ? elapsed : 1) ))}
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1)
  cov=$(echo "$last" | grep -Eo 'cov: [0-9]+' | awk '{print $2}')
  ft=$(echo "$last" | grep -Eo 'ft: [0-9]+' | awk '{print $2}')
  found=$(find "$work" -type f | wc -l)
  after=$(find "$artifacts" -type f | wc -l)
  crashes=$(( after - before ))
  if [ $status != 0 ] && [ $crashes = 0 ]; then crashes="run failed (status $status, see $logs/$t.log)"; fi
  note=""
  if [ "$crashes" != 0 ]; then
    note=" ($(find "$artifacts" -type f -newermt "@$start" -printf '%f ' | sed 's/ $//'); stopped after $elapsed s)"
    total_crashes=$((total_crashes + 1))
  fi
  add_row "| $t | $elapsed | $(printf "%'d" "$execs") | $(printf "%'d" "$rate") | ${cov:-?} / ${ft:-?} | $found / $seeds | $crashes$note |"
done
if [ $record = 1 ]; then
  grep -vF "$marker" BENCHMARKS.md >BENCHMARKS.md.new
  mv BENCHMARKS.md.new BENCHMARKS.md
fi
log "logs in $logs"
[ $total_crashes = 0 ]
