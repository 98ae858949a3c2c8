#!/usr/bin/env bash
# End-to-end test of the Windows agent under Wine, against a Linux collector on loopback:
#
#   deploy/windows/build.sh && deploy/windows/package.sh && cargo build -p invigilator-collector \
#     && tests/windows/wine-smoke.sh
#
# 0. A wrong token: msiexec must fail, and roll back (no service, no exe, no enrolment).
# 1. Install: `msiexec /i invigilator-agent-*.msi /qn COLLECTOR=https://localhost:PORT TOKEN=...`
#    must install the exe and the InvigilatorAgent service, enrol the device (as the MSI's
#    deferred custom action) and start the service.
# 2. Run: the service delivers heartbeats and process events over mTLS; a Windows program named
#    tor.exe must give a circumvention.tor alert from this agent in `alerts list --json`; a
#    Chrome history placed in the Wine user's profile (C:\users\USER\AppData\Local\Google\
#    Chrome\User Data\Default\History) must be read and its search must raise keywords.self_harm.
#    Chrome's machine policy in the registry must be read into the heartbeat's browser posture:
#    open (alerted), then closed once the shipped values are written under HKLM.
# 2c. The native-messaging host the MSI registers, started as Chrome starts it, must have a
#    visit acknowledged over the agent's named pipe and delivered as the Windows user.
# 3. Upgrade: a newer MSI (same exe, version 0.1.1, built here) installed over it with the same,
#    already used, token must keep the agent id, restart the service and keep events flowing;
#    with ADDLOCAL=Agent,ChromiumPolicies it must write the browsers' policies (the extension
#    force-installed from EXTENSION_UPDATE_URL); a Chrome that then runs with no extension
#    connected must raise agent.extension_missing.
# 4. Uninstall: `msiexec /x` must remove the service, the exe, %ProgramData%\Invigilator and
#    the browser policies it wrote.
# It also prints the exe's size and the resident memory of the service's Wine process.
#
# Run by tests/run.sh (and so by .ci/run). Needs wine (Debian 12: 8.0; tests/setup.sh installs
# it) and the test-only bcryptprimitives.dll shim that build.sh makes (Wine 8 lacks ProcessPrng).
# Environment: KEEP=1 keeps the work directory; SETTLE (10) seconds before measuring memory.
#
# Two things here are test scaffolding that Windows does not need: the shim goes into the
# prefix's system32 (the service is started by services.exe, not from the exe's folder), and
# session.exe, an idle program standing in for a logged-on desktop, runs throughout, because
# Wine stops services.exe and its services when no ordinary program is left running.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

# shellcheck source=tests/windows/common.sh
. tests/windows/common.sh
msi="$root/target/windows/invigilator-agent-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)-x64.msi"
require_files "$exe" "$shim" "$collector" "$msi"
[ "$msi" -nt "$exe" ] || { echo "wine-smoke: $msi is older than $exe: run deploy/windows/package.sh" >&2; exit 2; }
command -v wine >/dev/null || { echo "wine-smoke: wine is not installed (apt-get install wine)" >&2; exit 2; }

work="$(mktemp -d /tmp/wine-smoke.XXXXXX)"
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Only this test's own Wine prefix: its wineserver and every Windows process in it.
  WINEPREFIX="$work/prefix" wineserver -k 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    echo "--- collector log"; tail -n 30 "$work/collector.log" 2>/dev/null || true
    echo "--- agent log"; tail -n 40 "${state:-/nonexistent}/agent.log" 2>/dev/null || true
    echo "--- msiexec logs"; for l in "$work"/msi-*.log; do [ -f "$l" ] && { echo "$l:"; iconv -f utf-16le -t utf-8 "$l" 2>/dev/null | grep -a -i -E "error|failed|return value 3" | tail -n 15; }; done
  fi
  if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

wait_for() { # seconds, what, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "wine-smoke: timed out waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

echo "wine-smoke: preparing the Wine prefix"
prepare_prefix
# Test-only Windows programs (tests/windows/tor.c).
x86_64-w64-mingw32-gcc -O2 -s -o "$work/tor.exe" tests/windows/tor.c
cp "$work/tor.exe" "$work/session.exe"
wine "$work/session.exe" 3600 &
pids+=($!)

bin="$WINEPREFIX/drive_c/Program Files/Invigilator"
win_user=$(wine cmd /c 'echo %USERNAME%' 2>/dev/null | tr -d '\r')
state="$WINEPREFIX/drive_c/ProgramData/Invigilator"

data="$work/collector"
start_collector "$data" "$work/collector.log"
pids+=("$collector_pid")
port=$grpc_port
token=$("$collector" token create --data-dir "$data" --group shared-ict-suite)

msiexec() { # verb msi log-name [PROPERTY=value ...]
  local verb=$1 package=$2 log=$3; shift 3
  wine msiexec "$verb" "$(winepath -w "$package")" /qn /l*v "$(winepath -w "$work/msi-$log.log")" "$@"
}
service_state() { wine sc query InvigilatorAgent 2>/dev/null | sed -n 's/.*STATE *: *[0-9]* *\([A-Z_]*\).*/\1/p'; }
service_running() { [ "$(service_state)" = RUNNING ] && agent_pid >/dev/null; }
agent_pid() { pgrep -f 'invigilator-agent.exe service' | head -n1 | grep .; }
agent_id() { sed -n 's/^agent_id = "\(.*\)"/\1/p' "$state/agent.toml" 2>/dev/null; }
agents_json() { "$collector" agents list --data-dir "$data" 2>/dev/null; }
alert_raised() { # rule [user] -> true once this agent has that alert (for that user)
  "$collector" alerts list --data-dir "$data" --json 2>/dev/null | python3 -c '
import json, sys
agent, rule, user = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.exit(0 if any(a["rule"] == rule and a["agent_id"] == agent and (not user or a["user"] == user[0])
                  for a in json.load(sys.stdin)) else 1)
' "$id" "$@"
}
browsing_event() { # url [text] -> true once this agent has a browsing event of the URL from the
  # Wine user (with that text in it too, e.g. its reporter)
  "$collector" events list --data-dir "$data" --kind browsing 2>/dev/null | python3 -c '
import json, sys
agent, url, user, also = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
sys.exit(0 if any(e["agent_id"] == agent and url in json.dumps(e) and e["user"] == user
                  and all(t in json.dumps(e) for t in also) for e in json.load(sys.stdin)) else 1)
' "$id" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1])[1:-1])' "$1")" "$win_user" "${@:2}"
}
agent_field() { # field -> value for this agent in `agents list`
  agents_json | python3 -c 'import json,sys; print(next((a[sys.argv[2]] for a in json.load(sys.stdin) if a["agent_id"]==sys.argv[1]), ""))' "$id" "$1"
}

echo "wine-smoke: 0. a wrong token must fail the install and leave nothing behind"
bad_token="${token%?}0"; [ "$bad_token" != "$token" ] || bad_token="${token%?}1"
if msiexec /i "$msi" bad-token COLLECTOR="https://localhost:$port" TOKEN="$bad_token" >"$work/bad-token.out" 2>&1; then
  echo "wine-smoke: msiexec accepted a wrong enrolment token" >&2; exit 1
fi
! wine sc query InvigilatorAgent >/dev/null 2>&1 || { echo "wine-smoke: a failed install left the service" >&2; exit 1; }
[ ! -e "$bin/invigilator-agent.exe" ] || { echo "wine-smoke: a failed install left the exe" >&2; exit 1; }
for f in agent.toml agent.key; do
  [ ! -e "$state/$f" ] || { echo "wine-smoke: a failed install left $state/$f" >&2; exit 1; }
done
echo "wine-smoke: refused and rolled back: $(grep -m1 '^error:' "$work/bad-token.out" || echo '(no message)')"

echo "wine-smoke: 1. msiexec /i $(basename "$msi") /qn COLLECTOR=https://localhost:$port TOKEN=..."
msiexec /i "$msi" install COLLECTOR="https://localhost:$port" TOKEN="$token"
cmp -s "$bin/invigilator-agent.exe" "$exe" || { echo "wine-smoke: the installed exe is not the one built" >&2; exit 1; }
id=$(agent_id)
[ -n "$id" ] || { echo "wine-smoke: the MSI did not enrol the device (no $state/agent.toml)" >&2; exit 1; }
wait_for 30 "the InvigilatorAgent service to run" service_running
echo "wine-smoke: service InvigilatorAgent running (pid $(agent_pid)), enrolled as agent $id"

echo "wine-smoke: 2. heartbeat and process events over mTLS"
running() { grep -qs 'process source running' "$state/agent.log"; }
wait_for 60 "the service to start its process source (agent.log)" running
# Wine's ETW refuses a real-time consumer (OpenTraceW: access denied), so the ETW source must
# say why and fall back to polling; the heartbeat then reports "poll".
grep -q 'process source: ETW unavailable' "$state/agent.log" \
  || { echo "wine-smoke: no ETW fallback warning in agent.log" >&2; exit 1; }
echo "wine-smoke: $(grep -m1 -o 'process source: ETW unavailable.*' "$state/agent.log" | cut -c1-160)"
heartbeat() { [ "$(agent_field process_source)" = poll ]; }
wait_for 60 "a heartbeat from agent $id (process_source = poll)" heartbeat
sleep 2 # past the poll source's baseline scan
# The user: Wine lists no accounts for the process's SID, so this is the agent's fallback, the
# user logged on to the process's session.
# A program started while the poll source was still taking its baseline is taken as already
# running (on a loaded machine the baseline can take longer than the sleep above): then start
# it again, a new process, at most three times.
for attempt in 1 2 3; do
  wine "$work/tor.exe" &
  pids+=($!)
  if wait_for 30 "the circumvention.tor alert from agent $id, user $win_user (attempt $attempt)" alert_raised circumvention.tor "$win_user"; then
    break
  fi
  if [ "$attempt" = 3 ]; then
    "$collector" alerts list --data-dir "$data" --json >&2 || true
    exit 1
  fi
done
echo "wine-smoke: circumvention.tor alert delivered by the Windows agent $id"
"$collector" alerts list --data-dir "$data" --json | python3 -c '
import json, sys
for a in json.load(sys.stdin):
    if a["rule"] == "circumvention.tor":
        print("  alert:", a["rule"], a["severity"], a["hostname"], "user=" + repr(a["user"]), "|", a["summary"])'

# USB: Wine has no USB devices to show here; the source must still read Plug and Play
# (SetupAPI) without failing. Its attach/detach logic is unit-tested (sources::usb_pnp).
usb_reading() { grep -qs 'usb source: reading Plug and Play' "$state/agent.log"; }
wait_for 30 "the USB source's first Plug and Play reading" usb_reading
echo "wine-smoke: usb source: $(grep -m1 'usb source: reading Plug and Play' "$state/agent.log" | sed 's/.*devices=/devices=/')"

echo "wine-smoke: 2b. browsing: a Chrome history in the Windows user's profile"
# Laid out as Chrome does on Windows (%LOCALAPPDATA%\Google\Chrome\User Data\Default\History),
# with Chromium's schema as the agent's own test fixtures hold it (dumped from a real Chromium).
# Written to one side and moved in, as a browser's first history appears whole.
profile="$WINEPREFIX/drive_c/users/$win_user/AppData/Local/Google/Chrome/User Data/Default"
mkdir -p "$profile"
search_url='https://www.google.com/search?q=how+to+hide+self+harm+scars&sourceid=chrome'
python3 - "$work/History" "$search_url" agent/src/sources/browsing/fixtures.rs <<'PY'
import re, sqlite3, sys, time
db, url, fixtures = sys.argv[1:4]
schema = re.search(r'CHROMIUM_SCHEMA: &str = "(.*?)";', open(fixtures).read(), re.S).group(1)
c = sqlite3.connect(db)
c.executescript(schema)
t = int(time.time() * 1e6) + 11644473600 * 1000000  # Chromium time: microseconds since 1601
c.execute("INSERT INTO urls(url, title, visit_count, last_visit_time) VALUES (?, ?, 1, ?)",
          (url, "how to hide self harm scars - Google Search", t))
c.execute("INSERT INTO visits(url, visit_time, transition) VALUES (1, ?, 805306369)", (t,))
c.commit()
c.close()
PY
# Chrome keeps its history open (read/write, sharing read and write, SQLite's exclusive-mode
# lock): hold it that way from a Windows program before it reaches the profile, so the agent's
# very first copy meets the open handle. (A rename keeps Wine's sharing state: same file.)
x86_64-w64-mingw32-gcc -O2 -s -o "$work/hold-open.exe" tests/windows/hold-open.c
wine "$work/hold-open.exe" "$(winepath -w "$work/History")" 300 >"$work/hold-open.log" 2>&1 &
pids+=($!)
holding() { grep -qs '^holding' "$work/hold-open.log"; }
wait_for 30 "hold-open.exe to hold the history open" holding
mv "$work/History" "$profile/History"
wait_for 90 "the browsing event from $win_user's Chrome history" browsing_event "$search_url"
wait_for 30 "the keywords.self_harm alert for the search" alert_raised keywords.self_harm
echo "wine-smoke: browsing visit of Windows user $win_user delivered while the history was held open; keywords.self_harm alert raised"

# Browser posture from the registry: a Chrome installed where Chrome puts itself, with no
# machine policy, lets a pupil browse unseen, and the technician's alert is raised; the shipped
# policy's values written under HKLM (as Group Policy or Intune write them) close it, and the
# next heartbeat says so. (The exe is any Windows program: it is never run.)
chrome_exe="$WINEPREFIX/drive_c/Program Files/Google/Chrome/Application/chrome.exe"
mkdir -p "$(dirname "$chrome_exe")"
cp "$work/tor.exe" "$chrome_exe"
chrome_posture() { # -> "private_unseen extension_forced" for chrome, as the collector holds it
  agents_json | python3 -c '
import json, sys
a = next((a for a in json.load(sys.stdin) if a["agent_id"] == sys.argv[1]), {})
b = next((b for b in a.get("browsers") or [] if b.get("browser") == "chrome"), None)
print("" if b is None else "%s %s" % (b["private_unseen"], b["extension_forced"]))
' "$id"
}
chrome_open() { [ "$(chrome_posture)" = "True False" ]; }
wait_for 90 "a heartbeat with Chrome's posture (private windows open, no extension)" chrome_open
wait_for 60 "the agent.private_browsing alert" alert_raised agent.private_browsing
ext_id=$(cat "$root/agent/browser-extension/EXTENSION_ID")
key='HKLM\Software\Policies\Google\Chrome'
wine reg add "$key" /v IncognitoModeAvailability /t REG_DWORD /d 1 /f >/dev/null 2>&1
wine reg add "$key" /v BrowserGuestModeEnabled /t REG_DWORD /d 0 /f >/dev/null 2>&1
wine reg add "$key\\ExtensionInstallForcelist" /v 1 /t REG_SZ \
  /d "$ext_id;https://updates.school.example/invigilator.xml" /f >/dev/null 2>&1
chrome_closed() { [ "$(chrome_posture)" = "False True" ]; }
wait_for 90 "a heartbeat with Chrome's posture closed by the registry policy" chrome_closed
echo "wine-smoke: Chrome's registry policy read: private browsing open and alerted, then closed and force-installed"

echo "wine-smoke: 2c. the extension's native-messaging host, over the agent's named pipe"
# The MSI registered the host for Chrome; Chrome would start the exe it names with the
# extension's origin. Here a script plays Chrome: it starts that exe as the user, writes the
# extension's hello and a visit in Chrome's framing, and reads the replies. The visit is
# acknowledged only once the agent's spool holds it, and reaches the collector as the pipe
# client's account, whatever the message claims.
manifest=$(wine reg query 'HKLM\SOFTWARE\Google\Chrome\NativeMessagingHosts\uk.invigilator.agent' /ve 2>/dev/null \
  | tr -d '\r' | sed -n 's/.*REG_SZ *//p')
[ -n "$manifest" ] || { echo "wine-smoke: the MSI registered no native-messaging host for Chrome" >&2; exit 1; }
host_exe="$(dirname "$(winepath -u "$manifest")")/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["path"])' "$(winepath -u "$manifest")")"
cmp -s "$host_exe" "$exe" || { echo "wine-smoke: the Chrome host manifest ($manifest) does not name the installed agent" >&2; exit 1; }
pipe_url='https://www.bing.com/search?q=how+to+get+past+the+school+wifi+block&form=wine'
python3 - "$host_exe" "chrome-extension://$ext_id/" "$pipe_url" >"$work/host.out" 2>"$work/host.err" <<'PY' || { cat "$work/host.out" "$work/host.err" >&2; exit 1; }
import json, struct, subprocess, sys, threading, time
exe, origin, url = sys.argv[1:4]
host = subprocess.Popen(["wine", exe, origin], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def send(message):
    body = json.dumps(message).encode()
    host.stdin.write(struct.pack("=I", len(body)) + body)
    host.stdin.flush()
replies = []
def read():
    while True:
        head = host.stdout.read(4)
        if len(head) < 4:
            return
        replies.append(json.loads(host.stdout.read(struct.unpack("=I", head)[0])))
threading.Thread(target=read, daemon=True).start()
send({"type": "hello", "version": "0.1.0", "browser": "chrome"})
send({"type": "visit", "id": "wine-1", "url": url, "title": "<b>wifi</b>", "transition": "typed",
      "incognito": False, "time": int(time.time() * 1000), "user": "someone-else"})
deadline = time.time() + 60
while len(replies) < 2 and time.time() < deadline and host.poll() is None:
    time.sleep(0.1)
print(json.dumps(replies))
host.kill()
sys.exit(0 if replies == [{"hello": "ok"}, {"ack": "wine-1"}] else 1)
PY
echo "wine-smoke: host replies: $(cat "$work/host.out")"
wait_for 60 "the extension's visit of $win_user at the collector" browsing_event "$pipe_url" extension \
  || { "$collector" events list --data-dir "$data" --kind browsing >&2; exit 1; }
echo "wine-smoke: a visit through the native host and the named pipe reached the collector as $win_user"

# Memory: the Wine process running the agent, next to a program that does nothing under the
# same Wine (tor.exe is asleep): the difference is what the agent itself costs.
sleep "${SETTLE:-10}"
wine "$work/tor.exe" & # a fresh idle one, alive for 10 s
pids+=($!)
sleep 3
rss() { # pattern -> "total anon file" in KiB, for the largest matching process
  local best="0 0 0" pid
  for pid in $(pgrep -f "$1" || true); do
    local line
    line=$(awk '/^VmRSS:/ {t=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print t+0, a+0, f+0}' "/proc/$pid/status" 2>/dev/null || echo "0 0 0")
    [ "${line%% *}" -gt "${best%% *}" ] && best=$line
  done
  echo "$best"
}
read -r agent_rss agent_anon agent_file <<<"$(rss 'invigilator-agent.exe service')"
read -r idle_rss idle_anon idle_file <<<"$(rss 'tor\.exe')"
size=$(stat -c %s "$exe")
echo "wine-smoke: exe $size bytes ($(( size / 1024 / 1024 )) MiB)"
echo "wine-smoke: agent under Wine: RSS ${agent_rss} KiB (anon ${agent_anon}, file ${agent_file})"
echo "wine-smoke: idle program under Wine: RSS ${idle_rss} KiB (anon ${idle_anon}, file ${idle_file})"
echo "wine-smoke: agent's own share: $(( (agent_rss - idle_rss) / 1024 )) MiB RSS, $(( (agent_anon - idle_anon) / 1024 )) MiB anonymous"
# Where the agent's resident pages are: the largest mappings (file-backed ones are shared).
python3 - "$(agent_pid)" <<'PY'
import collections, sys
rss = collections.Counter()
name = "[anon]"
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    parts = line.split()
    if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
        name = parts[5].rsplit("/", 1)[-1] if len(parts) > 5 else "[anon]"
    elif parts[0] == "Rss:":
        rss[name] += int(parts[1])
print("wine-smoke: largest resident mappings (KiB):", ", ".join(f"{n} {k}" for n, k in rss.most_common(12)))
PY

echo "wine-smoke: 3. upgrade to 0.1.1 with the same (used) token"
seq_before=$(agent_field last_seq)
pid_before=$(agent_pid)
MSI_VERSION=0.1.1 MSI_OUT="$work/upgrade.msi" deploy/windows/package.sh >/dev/null 2>&1
# For the tamper check below: the upgraded service reads a short grace for a browser running
# without its extension, and beats often (the upgrade keeps agent.toml).
sed -i -e 's/^missing_after = .*/missing_after = "5s"/' -e 's/^heartbeat_interval = .*/heartbeat_interval = "5s"/' "$state/agent.toml"
[ "$(grep -c '^\(missing_after\|heartbeat_interval\) = "5s"' "$state/agent.toml")" = 2 ] \
  || { echo "wine-smoke: no missing_after or heartbeat_interval in agent.toml" >&2; exit 1; }
# The upgrade also installs the browser policies' feature, with the school's update URL.
msi_url='https://msi.school.example/invigilator/updates.xml'
msiexec /i "$work/upgrade.msi" upgrade COLLECTOR="https://localhost:$port" TOKEN="$token" \
  ADDLOCAL=Agent,ChromiumPolicies EXTENSION_UPDATE_URL="$msi_url"
forcelist() { wine reg query "$1\\ExtensionInstallForcelist" /v 1 2>/dev/null | tr -d '\r' | sed -n 's/.*REG_SZ *//p'; }
for policy_key in 'HKLM\Software\Policies\Google\Chrome' 'HKLM\Software\Policies\Microsoft\Edge' \
                  'HKLM\Software\Policies\BraveSoftware\Brave' 'HKLM\Software\Policies\Chromium'; do
  [ "$(forcelist "$policy_key")" = "$ext_id;$msi_url" ] \
    || { echo "wine-smoke: the MSI did not force-install the extension under $policy_key: '$(forcelist "$policy_key")'" >&2; exit 1; }
done
wine reg query 'HKLM\Software\Policies\Microsoft\Edge' /v InPrivateModeAvailability 2>/dev/null | grep -q '0x1' \
  || { echo "wine-smoke: the MSI did not turn Edge's InPrivate windows off" >&2; exit 1; }
echo "wine-smoke: the MSI's browser-policy feature force-installs the extension from $msi_url in Chrome, Chromium, Edge and Brave"
wait_for 30 "the upgraded service to run" service_running
[ "$(agent_pid)" != "$pid_before" ] || { echo "wine-smoke: the service was not restarted by the upgrade" >&2; exit 1; }
[ "$(agent_id)" = "$id" ] || { echo "wine-smoke: the upgrade changed the agent id ($id -> $(agent_id))" >&2; exit 1; }
agents=$(agents_json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$agents" = 1 ] || { echo "wine-smoke: $agents agents enrolled after the upgrade, not 1" >&2; exit 1; }
wine "$work/tor.exe" &
pids+=($!)
flowing() { [ "$(agent_field last_seq)" -gt "$seq_before" ]; }
wait_for 60 "events from agent $id after the upgrade (last_seq > $seq_before)" flowing
echo "wine-smoke: upgraded; same agent $id, service restarted (pid $(agent_pid)), last_seq $seq_before -> $(agent_field last_seq)"

# Tamper: Chrome runs as the user (the stand-in chrome.exe under Program Files) and no extension
# connects to the pipe from it: after the grace, the heartbeat names the user and the
# technician's alert is raised.
wine "$chrome_exe" 300 &
pids+=($!)
wait_for 120 "the agent.extension_missing alert for $win_user's Chrome" alert_raised agent.extension_missing \
  || { agents_json >&2; exit 1; }
"$collector" alerts list --data-dir "$data" --json | python3 -c '
import json, sys
user = sys.argv[1]
alerts = [a for a in json.load(sys.stdin) if a["rule"] == "agent.extension_missing"]
for a in alerts:
    print("wine-smoke: Chrome running without its extension:", a["severity"], "|", a["summary"])
sys.exit(0 if any("chrome" in a["summary"] and user in a["summary"] for a in alerts) else 1)
' "$win_user" || { echo "wine-smoke: the alert does not name Chrome and $win_user" >&2; exit 1; }

echo "wine-smoke: 4. msiexec /x"
msiexec /x "$work/upgrade.msi" uninstall
gone() { ! wine sc query InvigilatorAgent >/dev/null 2>&1 && ! agent_pid >/dev/null; }
wait_for 30 "the service to be removed" gone
[ ! -e "$bin/invigilator-agent.exe" ] || { echo "wine-smoke: the exe is still installed" >&2; exit 1; }
[ ! -e "$state" ] || { echo "wine-smoke: $state is still there after uninstall" >&2; exit 1; }
[ -z "$(forcelist 'HKLM\Software\Policies\Microsoft\Edge')" ] \
  || { echo "wine-smoke: the MSI's browser policies are still there after uninstall" >&2; exit 1; }
echo "wine-smoke: uninstalled; service, exe and state directory removed"
echo "wine-smoke: PASS"
