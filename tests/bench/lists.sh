#!/usr/bin/env bash
# Category lists, side by side in one run: `invigilator-collector lists classify` (release
# build) and squidGuard 1.6 (Debian's `squidguard`) on the same UT1 categories and the same
# deterministic sample of 1,000,000 URLs (tests/src/bin/urlgen.rs). Prints a Markdown section on
# stdout (progress on stderr): URLs/s, CPU and peak RSS of each, the size of the list files, the
# ratios, and the agreement with every difference sorted by its explanation.
#
#   tests/bench/lists.sh [--quick] [--built]     (--quick: 200,000 URLs; --built: run.sh built)
#
# The categories are those of tests/tests/lists_squidguard.rs (keep the two lists the same).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
count=1000000; built=0
for a in "$@"; do
  case "$a" in
    --quick) count=200000 ;;
    --built) built=1 ;;
    *) echo "usage: $0 [--quick] [--built]" >&2; exit 2 ;;
  esac
done
loaded=adult,agressif,chat,dangerous_material,dating,doh,drogue,filehosting,gambling,games,hacking,malware,publicite,redirector,remote-control,shortener,social_networks,vpn,warez,webmail
unloaded=audio-video,bank,blog,download,educational_games,forums,jobsearch,liste_blanche,phishing,press,shopping,sports,strict_redirector
ut1="${INVIGILATOR_UT1:-$root/tests/data/ut1}"
[ -d "$ut1/gambling" ] || { echo "UT1 lists not found at $ut1 (set INVIGILATOR_UT1)" >&2; exit 2; }
command -v squidGuard >/dev/null || { echo "squidGuard missing: run tests/setup.sh (as root)" >&2; exit 2; }
[ $built = 1 ] || cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
bin="$root/target/release"
work="$(mktemp -d /tmp/invigilator-bench-lists.XXXXXX)"
trap 'rm -rf "$work"' EXIT
log() { echo "[bench lists] $*" >&2; }

log "preparing $loaded; building squidGuard's databases"
t0=$(date +%s.%N)
"$bin/invigilator-listcmp" prepare --ut1 "$ut1" --categories "$loaded" --work "$work"
t1=$(date +%s.%N)
log "sample of $count URLs"
"$bin/invigilator-urlgen" --lists "$ut1" --count "$count" --seed 1 --loaded "$loaded" \
  --unloaded "$unloaded" --provenance "$work/prov.txt" >"$work/urls.txt"
sed 's|$| 10.0.0.1/- - GET|' "$work/urls.txt" >"$work/urls.squid"

# measure NAME STDIN STDOUT CMD...: wall seconds, CPU seconds and peak RSS (KiB) of CMD alone,
# by GNU time (a Python parent's getrusage would count its own pre-exec fork, ~14 MiB).
command -v /usr/bin/time >/dev/null 2>&1 || [ -x /usr/bin/time ] \
  || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
measure() {
  local name=$1 stdin=$2 stdout=$3
  shift 3
  local stats start end
  stats=$(mktemp)
  # Wall time from the nanosecond clock: time's %e has only centiseconds, too coarse at 0.5 s.
  start=$(date +%s%N)
  if ! /usr/bin/time -o "$stats" -f "%U %S %M" "$@" <"$stdin" >"$stdout"; then
    echo "$name failed" >&2
    exit 1
  fi
  end=$(date +%s%N)
  awk -v wall="$(( (end - start) / 1000 ))" '{ printf "%.3f %.3f %d\n", wall / 1e6, $1 + $2, $3 }' "$stats"
  rm -f "$stats"
}
log "squidGuard"
sg=$(measure squidGuard "$work/urls.squid" "$work/sg.out" squidGuard -c "$work/squidguard.conf")
read -r sg_wall sg_cpu sg_rss <<<"$sg"
log "lists import (compiles the same categories, as squidGuard -C does)"
t2=$(date +%s.%N)
"$bin/invigilator-collector" lists import --data-dir "$work/cdata" --format ut1 "$work/lists" >&2
t3=$(date +%s.%N)
log "lists classify on the imported lists"
cl=$(measure classify "$work/urls.txt" "$work/cl.out" "$bin/invigilator-collector" lists classify --lists "$work/cdata")
read -r cl_wall cl_cpu cl_rss <<<"$cl"
log "lists classify on the raw UT1 folder (compiled at start-up)"
raw=$(measure classify-raw "$work/urls.txt" "$work/cl-raw.out" "$bin/invigilator-collector" lists classify --lists "$work/lists")
read -r raw_wall raw_cpu raw_rss <<<"$raw"
cmp -s "$work/cl.out" "$work/cl-raw.out" || { echo "classify answers differ between imported and raw lists" >&2; exit 1; }
list_bytes=$(find "$work/lists" -type f \( -name domains -o -name urls -o -name expressions \) -printf '%s\n' | awk '{s+=$1} END {print s}')
entries=$(find "$work/lists" -type f \( -name domains -o -name urls -o -name expressions \) -exec cat {} + | wc -l)

echo "### Category lists: \`lists classify\` beside squidGuard 1.6, same lists, same $count URLs"
echo
echo "Both read the URLs from a file on stdin and write one answer per line; classify uses all cores, squidGuard one (it is single-threaded), hence the per-CPU-second row too."
echo
echo "Categories loaded ($(echo "$loaded" | tr ',' '\n' | wc -l)): $(echo "$loaded" | sed 's/,/, /g')."
echo "The sample also draws from $(echo "$unloaded" | tr ',' '\n' | wc -l) categories not loaded, near misses and random hosts (tests/src/urlgen)."
echo
python3 - "$count" "$sg_wall" "$sg_cpu" "$sg_rss" "$cl_wall" "$cl_cpu" "$cl_rss" "$list_bytes" "$entries" "$t0" "$t1" "$raw_wall" "$raw_cpu" "$raw_rss" "$t2" "$t3" <<'PY'
import sys
n, sgw, sgc, sgr, clw, clc, clr, size, entries, t0, t1, rw, rc, rr, t2, t3 = sys.argv[1:]
n = int(n); sgw, sgc, clw, clc, rw, rc = map(float, (sgw, sgc, clw, clc, rw, rc))
sgr, clr, rr, size = int(sgr) * 1024, int(clr) * 1024, int(rr) * 1024, int(size)
mib = lambda b: f"{b / 1048576:.1f} MiB"
print("| | squidGuard 1.6.0 | lists classify | ratio |")
print("|---|---|---|---|")
print(f"| URLs/s (wall, start-up included) | {n / sgw:,.0f} | {n / clw:,.0f} | {sgw / clw:.1f}x |")
print(f"| URLs per CPU-second | {n / sgc:,.0f} | {n / clc:,.0f} | {sgc / clc:.1f}x |")
print(f"| wall / CPU seconds | {sgw:.2f} / {sgc:.2f} | {clw:.2f} / {clc:.2f} | |")
print(f"| peak RSS | {mib(sgr)} | {mib(clr)} | |")
print(f"| peak RSS / list files ({mib(size)}, {int(entries):,} lines) | {sgr / size:.2f} | {clr / size:.2f} | |")
print(f"\n`lists classify` reading the raw UT1 folder instead (compiling it at start-up, same answers): "
      f"{n / rw:,.0f} URLs/s ({sgw / rw:.1f}x squidGuard), {n / rc:,.0f} per CPU-second, peak RSS {mib(rr)} ({rr / size:.2f}x the list files).")
print(f"\nNot counted above: squidGuard's `-C all` database build (with the copy of the lists) "
      f"{float(t1) - float(t0):.1f} s; `lists import` {float(t3) - float(t2):.1f} s.")
print("Targets (issue 4): classify at least 50x squidGuard's URLs/s; classify RSS at most 3x the list files.\n")
PY
echo '```'
"$bin/invigilator-listcmp" compare --work "$work" --urls "$work/urls.txt" --provenance "$work/prov.txt" \
  --squidguard "$work/sg.out" --classify "$work/cl.out"
echo '```'
echo
