#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent). Today that is only the
# Rust components for the lint checks; Debian packages are added here as tests come to need them.
set -euo pipefail
need_apt=()
for cmd in bash; do
  command -v "$cmd" >/dev/null || need_apt+=("$cmd")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
