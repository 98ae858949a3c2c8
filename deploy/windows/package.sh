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
# The host manifests the Linux package installs, naming the exe beside them (a relative path is
# taken from the manifest's own folder on Windows).
hosts="target/windows/native-messaging"
mkdir -p "$hosts"
for browser in chromium firefox; do
  python3 - "deploy/browsers/native-messaging/$browser/uk.invigilator.agent.json" \
    "$hosts/uk.invigilator.agent.$browser.json" <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
manifest["path"] = "invigilator-agent.exe"
json.dump(manifest, open(sys.argv[2], "w"), indent=2)
PY
done
wixl -a x64 -D Version="$version" -D AgentExe="$exe" \
  -D HostChromium="$hosts/uk.invigilator.agent.chromium.json" \
  -D HostFirefox="$hosts/uk.invigilator.agent.firefox.json" \
  -D ExtensionId="$(tr -d '[:space:]' <agent/browser-extension/EXTENSION_ID)" \
  -o "$msi" deploy/windows/invigilator-agent.wxs
echo "built $msi ($(stat -c %s "$msi") bytes)"
