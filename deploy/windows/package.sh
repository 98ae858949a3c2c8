#!/usr/bin/env bash
# Packages the cross-built Windows agent as an MSI with wixl (msitools):
#
#   deploy/windows/build.sh && deploy/windows/package.sh
#
# Output: target/windows/invigilator-agent-VERSION-x64.msi. Silent install and enrolment:
#
#   msiexec /i invigilator-agent-VERSION-x64.msi /qn COLLECTOR=https://HOST:PORT TOKEN=...
#
# The Wine test shim is never packaged. Environment (for the upgrade test): MSI_VERSION gives
# the package another version (three numbers: Windows Installer ignores a fourth), MSI_OUT
# another output path.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

if ! dpkg-query -W -f='${Status}' wixl 2>/dev/null | grep -q 'install ok installed'; then
  echo "installing: wixl" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends wixl >/dev/null
fi

# Relative to the repository: wixl resolves File/@Source against the working directory.
exe="target/windows/x86_64-pc-windows-gnu/release/invigilator-agent.exe"
[ -f "$exe" ] || { echo "missing $exe: run deploy/windows/build.sh first" >&2; exit 1; }
version="${MSI_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}"
msi="${MSI_OUT:-$root/target/windows/invigilator-agent-$version-x64.msi}"
wixl -a x64 -D Version="$version" -D AgentExe="$exe" -o "$msi" deploy/windows/invigilator-agent.wxs
echo "built $msi ($(stat -c %s "$msi") bytes)"
