# Sourced by the side-by-side benches: builds an earlier commit's collector in release, in a
# worktree kept at a fixed place under target/ with its own target directory, so that its
# build is reused from one run to the next and the two builds stay apart.
#   old_collector REV    (prints the old binary's path; build output on stderr)
old_collector() {
  local root src rev
  root="$(git rev-parse --show-toplevel)"
  rev="$(git -C "$root" rev-parse "$1^{commit}")"
  src="$root/target/ingest-compare-src"
  if [ "$(git -C "$src" rev-parse HEAD 2>/dev/null)" != "$rev" ]; then
    git -C "$root" worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git -C "$root" worktree prune
    git -C "$root" worktree add --detach "$src" "$rev" >&2
  fi
  CARGO_TARGET_DIR="$root/target/ingest-compare-old" cargo build --release \
    --manifest-path "$src/Cargo.toml" -p invigilator-collector --bins >&2
  echo "$root/target/ingest-compare-old/release/invigilator-collector"
}
