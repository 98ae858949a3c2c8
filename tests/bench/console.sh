#!/usr/bin/env bash
# Console under a full store: 100,000 alerts (tests/src/bin/consolebench.rs), release build,
# the alerts page and its API timed under the filters staff use. Prints a Markdown table.
#
#   tests/bench/console.sh [--quick] [--built]     (--quick: 10 requests per query)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
requests=40; built=0
for a in "$@"; do
  case "$a" in
    --quick) requests=10 ;;
    --built) built=1 ;;
    *) echo "usage: $0 [--quick] [--built]" >&2; exit 2 ;;
  esac
done
[ $built = 1 ] || cargo build --release -p invigilator-collector -p invigilator-tests --bins >&2
echo "### Console, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r)"
echo
"$root/target/release/invigilator-consolebench" --bin "$root/target/release" --alerts 100000 \
  --requests "$requests" --login-flood 20
