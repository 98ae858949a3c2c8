#!/usr/bin/env bash
# Keyword detection with and without one-letter misspellings ([keyword_misspellings]), side by
# side in one release binary: recall per concern, false positives, and texts per second on one
# core over the corpus, terms alone and with the classifier, ROUNDS interleaved rounds.
#   tests/bench/misspellings.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
cargo build --release -p invigilator-collector --locked >/dev/null
bin=target/release/invigilator-collector
corpus=collector/policy/corpus/keywords.jsonl
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$bin" init --data-dir "$dir/data" >/dev/null
base="$dir/data/policy.toml"
for m in on off; do
  for c in model terms; do
    f="$dir/$m-$c.toml"
    cp "$base" "$f"
    [ "$m" = on ] && printf '\n[keyword_misspellings]\nenabled = true\n' >> "$f"
    [ "$c" = terms ] && printf '\n[keyword_model]\nenabled = false\n' >> "$f"
  done
done
for m in off on; do
  echo "== misspellings $m: recall (terms alone)"
  "$bin" policy eval "$corpus" --policy "$dir/$m-terms.toml" | sed -n '1,13p'
done
for r in $(seq "$rounds"); do
  for m in off on; do
    for c in terms model; do
      rate=$(taskset -c 0 "$bin" policy eval "$corpus" --policy "$dir/$m-$c.toml" --repeat 200 | grep -o '[0-9,]* texts/s' | tail -1)
      echo "round $r misspellings $m $c: $rate"
    done
  done
done
