#!/usr/bin/env bash
# Cross-builds the Windows agent on Debian 12, with Debian's own Rust toolchain:
#
#   deploy/windows/build.sh
#
# Output (under CARGO_TARGET_DIR=target/windows, so the host's target/debug is left alone):
#   target/windows/x86_64-pc-windows-gnu/release/invigilator-agent.exe   the agent
#   target/windows/windows-test/bcryptprimitives.dll                      Wine test shim (never shipped)
#
# Debian's rustc-web (1.96) ships no prebuilt std for x86_64-pc-windows-gnu, so the standard
# library is built from rust-web-src with -Zbuild-std (RUSTC_BOOTSTRAP=1 unlocks it on a stable
# compiler). The rustup toolchain in ~/.cargo/bin is deliberately not used: absolute paths only.
#
# Environment: SKIP_APT=1 skips the package check; WINDOWS_PROFILE (release) picks the profile.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

target=x86_64-pc-windows-gnu
profile="${WINDOWS_PROFILE:-release}"
export CARGO_TARGET_DIR="$root/target/windows"
out="$CARGO_TARGET_DIR/$target/$profile"
shim_dir="$CARGO_TARGET_DIR/windows-test"

# Installs only what is missing; quiet and idempotent.
need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
if [ "${SKIP_APT:-0}" != 1 ]; then
  need_packages rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64
fi

mingw_gcc=/usr/bin/x86_64-w64-mingw32-gcc
for tool in /usr/bin/cargo /usr/bin/rustc "$mingw_gcc"; do
  [ -x "$tool" ] || { echo "missing $tool" >&2; exit 1; }
done

# Debian's toolchain, never the rustup one that may come first on PATH.
export RUSTC=/usr/bin/rustc
export RUSTDOC=/usr/bin/rustdoc
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER="$mingw_gcc"
export CC_x86_64_pc_windows_gnu="$mingw_gcc"
export AR_x86_64_pc_windows_gnu=/usr/bin/x86_64-w64-mingw32-ar
# Link the C runtime helpers in, so the exe needs no MinGW DLLs beside it.
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS="-C link-arg=-static -C link-arg=-static-libgcc"

# Size over speed for the Windows exe (the agent is idle nearly all the time): every page of
# the image that is touched stays resident, and the memory target is measured under Wine.
# Only this build: the Linux binaries keep the workspace's release profile.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
export CARGO_PROFILE_RELEASE_LTO=fat
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_STRIP=symbols

profile_flag=()
[ "$profile" = release ] && profile_flag=(--release)
# Page-aligned sections in the file (MinGW's default is 512 bytes) let Wine map the image
# instead of copying it into private memory: about 6 MB less resident under Wine, no change on
# Windows. Given to the final link only (cargo rustc), so no dependency is rebuilt for it.
# --no-default-features: the only default feature is the Linux eBPF source, whose build script
# would otherwise compile libbpf for the build host for nothing.
/usr/bin/cargo rustc "${profile_flag[@]}" --no-default-features \
  -Zbuild-std=std,panic_abort \
  --target "$target" \
  -p invigilator-agent --bin invigilator-agent \
  -- -C link-arg=-Wl,--file-alignment=4096

mkdir -p "$shim_dir"
"$mingw_gcc" -shared -O2 -s -o "$shim_dir/bcryptprimitives.dll" \
  deploy/windows/test-shim/bcryptprimitives.c -ladvapi32

exe="$out/invigilator-agent.exe"
size=$(stat -c %s "$exe")
echo "built $exe ($size bytes, $(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1048576}') MiB)"
echo "test shim: $shim_dir/bcryptprimitives.dll (Wine only; never shipped)"
