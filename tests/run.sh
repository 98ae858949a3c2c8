#!/usr/bin/env bash
# Runs every check and test of the project: formatting, lints, unit tests next to the code,
# the whole-system tests in tests/ (real processes, real TLS, real netlink), and the Windows
# agent's cross-build, MSI and Wine smoke test. Installs what the
# tests need first. Must run as root: the process-capture tests use the kernel's proc connector.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "$(id -u)" != 0 ]; then
  # A sudo-capable user: run again as root with the caller's Rust toolchain (sudo's secure_path
  # would hide ~/.cargo/bin).
  if command -v sudo >/dev/null; then
    exec sudo "PATH=$PATH" "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" \
      "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" "$0" "$@"
  fi
  echo "tests/run.sh: the whole-system tests need root (CAP_NET_ADMIN for the proc connector)" >&2
  exit 2
fi
# A test run builds each crate once: incremental caches would only fill the disk (a fresh
# clone's run once failed with "No space left on device" in the Windows cross-build).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
"$root/tests/setup.sh"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
# Test binaries run one after another; the tests inside one run in parallel.
cargo test --workspace --locked
# The store on PostgreSQL: a server of the tests' own (tests/postgres.sh), the collector's unit
# tests (the whole store suite) and the whole-system tests that touch storage (enrolment,
# delivery under kill -9, rules and alerts, console roles and audit tampering, browsing, the
# Chromebook endpoint).
pg_dir="$(mktemp -d)"
pg_url="$("$root/tests/postgres.sh" start "$pg_dir")"
trap '"$root/tests/postgres.sh" stop "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$pg_dir"' EXIT
INVIGILATOR_TEST_POSTGRES="$pg_url" cargo test --locked -p invigilator-collector --lib
INVIGILATOR_TEST_POSTGRES="$pg_url" cargo test --locked -p invigilator-tests \
  --test enrolment --test delivery --test rules --test alerts --test console_access \
  --test browsing --test extension --test chromebook --test web_rules --test session
"$root/tests/postgres.sh" stop "$pg_dir"
trap - EXIT
rm -rf "$pg_dir"
# Fuzz targets (fuzz/, a workspace of its own): every parser of device input replays its corpus
# and a few thousand seeded inputs, on stable, sharing the workspace's target directory. Where
# nightly and cargo-fuzz are installed, INVIGILATOR_CI_FUZZ=1 also fuzzes each target for 20 s
# (coverage-guided); off by default, as its instrumented build alone takes minutes. The long runs
# are a benchmark: tests/bench/fuzz.sh.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
CARGO_TARGET_DIR="$root/target" cargo test --manifest-path fuzz/Cargo.toml --locked
if [ "${INVIGILATOR_CI_FUZZ:-0}" != 0 ] && command -v cargo-fuzz >/dev/null \
  && rustup run nightly rustc --version >/dev/null 2>&1; then
  FUZZ_NO_RECORD=1 "$root/tests/bench/fuzz.sh" 20
fi
# The Windows agent: cross-built with Debian's toolchain, packaged as an MSI, installed silently
# under Wine and delivering a process alert to the Linux collector built above.
"$root/deploy/windows/build.sh"
"$root/deploy/windows/package.sh"
"$root/tests/windows/wine-smoke.sh"
