#!/usr/bin/env bash
# Exec capture, side by side in one run: the agent's eBPF source, the agent's proc connector
# source (a second agent with `[process] ebpf = false`) and forkstat, all watching the same
# storms; then each agent's CPU at 200 execs/s and at rest, and its memory. Release build, one
# collector on loopback. Prints a Markdown report for BENCHMARKS.md on stdout.
#
#   sudo tests/bench/exec.sh [storm size, default 2000]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
runs="${1:-2000}"
[ "$(id -u)" = 0 ] || { echo "needs root (BPF, proc connector, forkstat)" >&2; exit 2; }
command -v forkstat >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq forkstat >/dev/null; }
cargo build --release --bins -p invigilator-agent -p invigilator-collector >&2
bin="$root/target/release"
work="$(mktemp -d /tmp/invigilator-exec.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin/invigilator-collector" init --data-dir "$work/c" >/dev/null
"$bin/invigilator-collector" serve --data-dir "$work/c" --grpc-listen 127.0.0.1:50081 --http-listen 127.0.0.1:0 >"$work/c.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do grep -q listening "$work/c.log" && break; sleep 0.1; done
start_agent() { # NAME EBPF(true|false)
  local token
  token=$("$bin/invigilator-collector" token create --data-dir "$work/c" --group staff)
  "$bin/invigilator-agent" enroll --collector https://localhost:50081 --token "$token" --state-dir "$work/$1" >/dev/null
  sed -i "s/^ebpf = true$/ebpf = $2/" "$work/$1/agent.toml"
  "$bin/invigilator-agent" run --state-dir "$work/$1" >"$work/$1.log" 2>&1 &
  pids+=("$!"); echo "$!" >"$work/$1.pid"
  for _ in $(seq 100); do grep -q "process source running" "$work/$1.log" && break; sleep 0.1; done
  grep -q "process_source=\"$1\"" "$work/$1.log" || { cat "$work/$1.log" >&2; exit 1; }
}
start_agent ebpf true
start_agent netlink false

forkstat -e exec -l >"$work/forkstat.out" 2>&1 &
fpid=$!; pids+=("$fpid")
sleep 2
mkdir -p "$work/storm-cwd"
python3 - "$bin" "$work" "$runs" "$(cat "$work/ebpf.pid")" "$(cat "$work/netlink.pid")" "$fpid" <<'PY'
import json, os, subprocess, sys, time
bin_, work, runs, ebpf_pid, netlink_pid, fpid = sys.argv[1], sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:])
cwd = os.path.realpath(f"{work}/storm-cwd")
agents = {}
for name in ("ebpf", "netlink"):
    for line in open(f"{work}/{name}/agent.toml"):
        if line.startswith("agent_id"):
            agents[name] = line.split("=", 1)[1].strip().strip('"')
hz = os.sysconf("SC_CLK_TCK")
def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
def rss_kib(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1])
def events():
    out = subprocess.run([f"{bin_}/invigilator-collector", "events", "list", "--data-dir", f"{work}/c",
                          "--json", "--kind", "process"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)

def storm(tag, ways, per_way):
    shells = [subprocess.Popen(["bash", "-c", f"cd '{cwd}' && for i in $(seq {per_way}); do /bin/true {tag}-{w}-$i & done; wait"])
              for w in range(ways)]
    for s in shells:
        s.wait()
    return {f"{tag}-{w}-{i}" for w in range(ways) for i in range(1, per_way + 1)}

def score(expected, tag):
    """Per agent: markers read in argv, also with the exe, also with the cwd; forkstat's."""
    time.sleep(8)
    ev = events()
    rows = {}
    for name, aid in agents.items():
        storm_ev = [e for e in ev if e.get("agent_id") == aid and len(e.get("argv") or []) > 1
                    and e["argv"][1].startswith(tag + "-")]
        argv = {e["argv"][1] for e in storm_ev}
        exe_argv = {e["argv"][1] for e in storm_ev if e.get("exe") == "/usr/bin/true"}
        full = {e["argv"][1] for e in storm_ev if e.get("exe") == "/usr/bin/true" and e.get("cwd") == cwd}
        rows[name] = (len(argv & expected), len(exe_argv & expected), len(full & expected))
    words = set(open(f"{work}/forkstat.out", errors="replace").read().split())
    return rows, len(expected & words)

print(f"### Exec capture: storms of `/bin/true <marker>` started as background jobs, cwd a temp directory")
print()
print("Two agents on the same machine at once (one with `[process] ebpf = false`) and forkstat, all")
print("watching the same storms. \"argv\" = the command line with its marker read; \"exe + argv\" = also")
print("the executable path; \"exe + argv + cwd\" = also the working directory (the proc connector")
print("source does not report a cwd; forkstat prints only the command line).")
print()
print("| storm | tool | argv | exe + argv | exe + argv + cwd |")
print("|---|---|---|---|---|")
for tag, ways, per in (("one", 1, runs), ("four", 4, 2500)):
    expected = storm(tag, ways, per)
    rows, fork = score(expected, tag)
    n = len(expected)
    pct = lambda k: f"{k} ({100.0 * k / n:.1f}%)"
    label = f"{n} in one loop" if ways == 1 else f"{n}, 4 loops at once"
    print(f"| {label} | agent, eBPF | {pct(rows['ebpf'][0])} | {pct(rows['ebpf'][1])} | {pct(rows['ebpf'][2])} |")
    print(f"| {label} | agent, proc connector | {pct(rows['netlink'][0])} | {pct(rows['netlink'][1])} | - |")
    print(f"| {label} | forkstat | {pct(fork)} | - | - |")
print()

# CPU and memory: 30 s at rest, then 30 s at 200 execs/s (sleep-paced, one exec at a time).
os.kill(fpid, 15)
time.sleep(3)
def measure(secs, work_fn):
    t0 = {p: ticks(p) for p in (ebpf_pid, netlink_pid)}
    start = time.monotonic()
    work_fn(start + secs)
    el = time.monotonic() - start
    return {p: 100.0 * (ticks(p) - t0[p]) / hz / el for p in t0}
def rest(until):
    while time.monotonic() < until:
        time.sleep(0.5)
n_started = [0]
def rate(until):
    nxt = time.monotonic()
    while nxt < until:
        subprocess.Popen(["/bin/true", "rate"]).wait()
        n_started[0] += 1
        nxt += 1 / 200
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
idle = measure(30, rest)
busy = measure(30, rate)
achieved = n_started[0] / 30
print(f"### Agent CPU and memory (release build, all default sources, connected)")
print()
print("| agent | CPU at rest (30 s) | CPU at %.0f execs/s (30 s) | RSS after |" % achieved)
print("|---|---|---|---|")
for name, pid in (("eBPF source (1 MiB ring)", ebpf_pid), ("proc connector source", netlink_pid)):
    print(f"| {name} | {idle[pid]:.2f}% of a core | {busy[pid]:.2f}% of a core | {rss_kib(pid) / 1024:.1f} MiB |")
print()
print("RSS counts the ring buffer's pages that have been touched; the ring is mapped from the kernel.")
PY
