#!/usr/bin/env bash
# Keyword detection, this tree beside an earlier commit's binary, each with its own built-in
# libraries, in one run on this machine: recall per concern and false positives on the
# development corpus and on the held-out sets (as the collector runs them), then texts per
# second on one core over the development corpus, terms alone and with the classifier, ROUNDS
# interleaved rounds.
#   tests/bench/keywords.sh REV [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rev="${1:?usage: keywords.sh REV [rounds]}"; rounds="${2:-3}"
cargo build --release -p invigilator-collector --locked >&2
# shellcheck source=old_build.sh
. "$root/tests/bench/old_build.sh"
old="$(old_collector "$rev")"
new="$root/target/release/invigilator-collector"
corpus=collector/policy/corpus/keywords.jsonl
holdout=collector/policy/corpus/holdout/holdout.jsonl
holdout2=collector/policy/corpus/holdout/holdout2.jsonl
holdout_ml=collector/policy/corpus/holdout/holdout-ml.jsonl
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
# Each binary's own default policy, and the same without the classifier.
for which in old new; do
  bin=$old; [ $which = new ] && bin=$new
  "$bin" init --data-dir "$dir/$which" >/dev/null
  cp "$dir/$which/policy.toml" "$dir/$which-model.toml"
  cp "$dir/$which/policy.toml" "$dir/$which-terms.toml"
  printf '\n[keyword_model]\nenabled = false\n' >> "$dir/$which-terms.toml"
done
echo "old: $rev ($(git log -1 --format=%h "$rev")), new: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' + changes')"
for which in old new; do
  bin=$old; [ $which = new ] && bin=$new
  echo "== $which: development corpus, terms and patterns"
  "$bin" policy eval "$corpus" --policy "$dir/$which-model.toml" | sed -n '1,13p'
  echo "== $which: held-out set, terms and patterns alone"
  "$bin" policy eval "$holdout" --policy "$dir/$which-terms.toml" | sed -n '1,13p'
  if [ -f "$holdout2" ]; then
    echo "== $which: second English set, terms and patterns alone"
    "$bin" policy eval "$holdout2" --policy "$dir/$which-terms.toml" | sed -n '1,13p'
  fi
  echo "== $which: home languages' held-out set, terms and patterns alone"
  "$bin" policy eval "$holdout_ml" --policy "$dir/$which-terms.toml" | sed -n '1,7p'
done
# A binary before bb6a63e has no --held-out: only this tree's is measured as it runs.
echo "== new: held-out set, as the collector runs it (the shipped classifier included)"
for c in "$holdout" "$holdout_ml"; do
  "$new" policy eval "$c" --policy "$dir/new-model.toml" --held-out \
    | sed -n '/As the collector/,/innocent/p'
done
for r in $(seq "$rounds"); do
  for which in old new; do
    bin=$old; [ $which = new ] && bin=$new
    for c in terms model; do
      rate=$(taskset -c 0 "$bin" policy eval "$corpus" --policy "$dir/$which-$c.toml" --repeat 200 \
        | grep -o '[0-9,]* texts/s' | tail -1)
      echo "round $r $which $c: $rate"
    done
  done
done
