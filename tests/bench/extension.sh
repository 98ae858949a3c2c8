#!/usr/bin/env bash
# Visit to alert: 50 searches in real Chromium with the extension and the history source both
# on; how long each took to be stored (with its alert) at the collector, by each reporter. Then
# the same for a Chromebook's extension posting straight to the collector (no agent).
# Debug builds, the collector CLI polled every 20 ms, everything on this machine's two cores.
#
#   tests/bench/extension.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --workspace --bins >&2
cargo test -p invigilator-tests --test extension -- --ignored --nocapture bench_visit_to_alert 2>&1 \
  | grep -E '^(extension|history source)'
cargo test -p invigilator-tests --test chromebook -- --ignored --nocapture bench_visit_to_alert 2>&1 \
  | grep -E '^chromebook'
