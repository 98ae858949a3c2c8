#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent): the Rust lint components
# and, for the cross-language interop test, Python's grpcio and grpcio-tools; dbus-daemon for the
# session tests.
set -euo pipefail
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore grpcio grpcio-tools 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages grpcio grpcio-tools
fi
# The agent's eBPF exec source: clang compiles the BPF program (agent/build.rs), libbpf-sys
# builds libbpf against the libelf and zlib headers.
command -v clang >/dev/null && [ -e /usr/include/libelf.h ] && [ -e /usr/include/zlib.h ] && command -v pkg-config >/dev/null \
  || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang libelf-dev zlib1g-dev pkg-config; }
# The package test (tests/tests/packages.rs) builds .debs with dpkg-deb, installs them with
# debconf preseeds, and checks the units with systemd-analyze (systemd is installed, not run).
for cmd in systemd-analyze deb-systemd-helper debconf-set-selections runuser setpriv adduser strip; do
  command -v "$cmd" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd init-system-helpers debconf util-linux adduser binutils; break; }
done
# The session tests run a private bus and a stand-in for systemd-logind on it.
command -v dbus-daemon >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dbus-daemon; }
for cmd in pgrep bash; do
  command -v "$cmd" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq procps bash; }
done
# The browsing tests drive Debian's Chromium and Firefox ESR, headless, with profiles of their own.
# The console tests drive the same Chromium through chromedriver (WebDriver).
command -v chromium >/dev/null && command -v firefox-esr >/dev/null && command -v chromedriver >/dev/null \
  || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver firefox-esr; }
# The browser extension's own tests (agent/browser-extension/test) run under node's test runner.
command -v node >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs; }
# The single sign-on test runs a real OpenID Connect provider (panva's oidc-provider, OpenID
# Certified) under node, pinned with its dependencies by tests/oidc/package-lock.json.
command -v npm >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -f "$root/tests/oidc/node_modules/oidc-provider/package.json" ] \
  || (cd "$root/tests/oidc" && npm ci --no-audit --no-fund --loglevel=error)
# The Chromebook test: the device certificate as PKCS#12 (openssl) into the profile's NSS
# database (certutil, pk12util).
for cmd in openssl certutil pk12util; do
  command -v "$cmd" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl libnss3-tools; break; }
done
# The leadership test cuts one collector off from the database (tests/tests/several_collectors.rs)
# with a firewall rule on loopback.
command -v iptables >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables; }
# The category-list differential test and benchmark compare `lists classify` with squidGuard
# (not squid itself, which it recommends).
command -v squidGuard >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends squidguard; }
# The Windows agent's smoke test runs it under Wine (64-bit is enough); deploy/windows/*.sh
# install their own build tools.
command -v wine >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine wine64; }
# The fault tests jump one agent's clock with libfaketime (LD_PRELOAD), never the machine's.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime; }
# The metrics test scrapes the collector with Debian's Prometheus and asks its query API. The
# package would start a system-wide Prometheus; a policy-rc.d kept only for the install stops that.
if ! command -v prometheus >/dev/null; then
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# The store's PostgreSQL engine: tests/postgres.sh runs a throwaway server from Debian's
# packages (the system-wide cluster and service are kept from starting, as below).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql postgresql-client
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# The syslog hand-off test sends to Debian's rsyslog with its TLS (gtls) driver, run in the
# foreground by the test; as for Prometheus, the system-wide service is kept from starting.
if ! dpkg -s rsyslog rsyslog-gnutls >/dev/null 2>&1; then
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
