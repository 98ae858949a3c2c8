#!/usr/bin/env bash
# Builds the Debian packages of the agent and the collector with dpkg-deb (no debhelper needed):
#
#   deploy/debian/build.sh OUT_DIR [BIN_DIR]
#
# BIN_DIR holds the built invigilator-agent and invigilator-collector (default target/release,
# built here if missing). Environment: DEB_VERSION (default: the workspace version),
# DEB_COMPRESS (xz; tests use none). Maintainer scripts, debconf templates and the units come
# from deploy/debian/{agent,collector}/ and deploy/systemd/; binaries are stripped.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: build.sh OUT_DIR [BIN_DIR]}"
bin="${2:-$root/target/release}"
version="${DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)}"
compress="${DEB_COMPRESS:-xz}"
arch="$(dpkg --print-architecture)"
if [ ! -x "$bin/invigilator-agent" ] || [ ! -x "$bin/invigilator-collector" ]; then
  (cd "$root" && cargo build --release --bins -p invigilator-agent -p invigilator-collector)
fi
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# browsers PKG: the extension's native-messaging host manifests where each browser looks for
# system-wide hosts (Brave reads Chrome's), the Firefox package the shipped policy installs
# from, and the managed policies for the administrator to put in place (they change what every
# user of the machine may do, so installing the agent does not turn them on by itself).
browsers() {
  local pkg="$1" nm="$root/deploy/browsers/native-messaging" host=uk.invigilator.agent.json
  for d in etc/chromium/native-messaging-hosts etc/opt/chrome/native-messaging-hosts \
           etc/opt/edge/native-messaging-hosts; do
    install -D -m 0644 "$nm/chromium/$host" "$pkg/$d/$host"
  done
  install -D -m 0644 "$nm/firefox/$host" "$pkg/usr/lib/mozilla/native-messaging-hosts/$host"
  "$root/agent/browser-extension/build.sh" >/dev/null
  install -D -m 0644 "$root/agent/browser-extension/dist/invigilator-firefox.xpi" \
    "$pkg/usr/share/invigilator/invigilator-firefox.xpi"
  install -d "$pkg/usr/share/invigilator/browser-policies"
  cp -r "$root/deploy/browsers/policies/." "$pkg/usr/share/invigilator/browser-policies/"
  find "$pkg/usr/share/invigilator" -type d -exec chmod 0755 {} +
  find "$pkg/usr/share/invigilator" -type f -exec chmod 0644 {} +
}

# package NAME DESCRIPTION DEPENDS
package() {
  local name="$1" description="$2" depends="$3" pkg="$work/$1"
  install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/usr/share/doc/$name"
  install -m 0755 "$bin/$name" "$pkg/usr/bin/$name"
  strip --strip-unneeded "$pkg/usr/bin/$name"
  install -m 0644 "$root/deploy/systemd/$name.service" "$pkg/lib/systemd/system/"
  install -m 0644 "$root/README.md" "$pkg/usr/share/doc/$name/README.md"
  if [ "$name" = invigilator-agent ]; then
    browsers "$pkg"
  fi
  for f in "$root/deploy/debian/${name#invigilator-}"/*; do
    case "$(basename "$f")" in
      templates) install -m 0644 "$f" "$pkg/DEBIAN/" ;;
      *) install -m 0755 "$f" "$pkg/DEBIAN/" ;;
    esac
  done
  # Everything under /etc is the administrator's to edit (an allowed_origins with the school's
  # own extension id): an upgrade keeps their version, and purge removes it.
  if [ -d "$pkg/etc" ]; then
    (cd "$pkg" && find etc -type f | LC_ALL=C sort | sed 's|^|/|') >"$pkg/DEBIAN/conffiles"
    chmod 0644 "$pkg/DEBIAN/conffiles"
  fi
  cat >"$pkg/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: Invigilator developers <invigilator@example.invalid>
Section: admin
Priority: optional
Depends: $depends
Installed-Size: $(du -ks "$pkg" | cut -f1)
Description: $description
CONTROL
  dpkg-deb --root-owner-group -Z"$compress" --build "$pkg" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
}

package invigilator-agent "Invigilator school monitoring agent
 Reports process, USB, screen-lock/session and browsing events from this device to an
 Invigilator collector over mutual TLS. Installs silently: give the collector address and an
 enrolment token by debconf preseed or in /etc/default/invigilator-agent." \
  "debconf (>= 0.5) | debconf-2.0, init-system-helpers (>= 1.54), libc6, libelf1, zlib1g"
package invigilator-collector "Invigilator school monitoring collector
 Receives agents' events over mutual TLS, applies the school's acceptable use policy, and
 serves the staff console, incident log and audit trail. Runs as its own user." \
  "adduser, init-system-helpers (>= 1.54), libc6"
