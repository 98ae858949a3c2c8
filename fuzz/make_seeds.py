#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/: a few real inputs per target, built
from the project's own fixtures (uevent captures, the browsers' real history schemas, the
default policy) so that the fuzzers start from well-formed input. Deterministic; run from any
directory: python3 fuzz/make_seeds.py"""

import os
import random
import re
import shutil
import sqlite3
import struct
import tempfile

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")


def out(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def uevents():
    fixtures = os.path.join(ROOT, "agent/tests/fixtures/uevent")
    for fname in sorted(os.listdir(fixtures)):
        if not fname.endswith(".uevents"):
            continue
        text = open(os.path.join(fixtures, fname)).read()
        blocks = [b for b in text.split("\n\n") if b.strip()]
        # The first and the last datagram of each capture (an add and a remove).
        for i in sorted({0, len(blocks) // 2, len(blocks) - 1}):
            d = b"".join(line.encode() + b"\0" for line in blocks[i].strip().splitlines())
            out("uevent", f"{fname[:-8]}-{i}", d)
    # udev's own re-broadcast, which the parser refuses.
    out("uevent", "libudev", b"libudev\0" + struct.pack(">I", 0xFEEDCAFE) + struct.pack("<I", 40)
        + bytes(28) + b"ACTION=add\0SUBSYSTEM=usb\0")


def nlmsg(kind, body):
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body


def proc_event(what, union, ack=0, idx=1, val=1):
    event = struct.pack("=IIQ", what, 1, 123456789) + union
    return struct.pack("=IIIIHH", idx, val, 7, ack, len(event), 0) + event


def pad4(b):
    return b + bytes(-len(b) % 4)


def proc_connector():
    NLMSG_ERROR, NLMSG_DONE = 2, 3
    exec_ = nlmsg(NLMSG_DONE, proc_event(2, struct.pack("=II", 4242, 4242)))
    exit_ = nlmsg(NLMSG_DONE, proc_event(0x80000000, struct.pack("=IIII", 4242, 4242, 0, 17)))
    ack = nlmsg(NLMSG_DONE, proc_event(0, struct.pack("=I", 0), ack=2))
    fork = nlmsg(NLMSG_DONE, proc_event(1, struct.pack("=IIII", 1, 1, 4242, 4242)))
    other = nlmsg(NLMSG_DONE, proc_event(2, struct.pack("=II", 1, 1), idx=4, val=1))
    err = nlmsg(NLMSG_ERROR, struct.pack("=i", -1) + nlmsg(16, b""))
    out("proc_connector", "exec", exec_)
    out("proc_connector", "exit", exit_)
    out("proc_connector", "ack", ack)
    out("proc_connector", "error", err)
    out("proc_connector", "several", pad4(exec_) + pad4(fork) + pad4(other) + exit_)


def exec_record():
    """Records as exec.bpf.c lays them out (96-byte header, then exe components leaf first,
    the raw command line, cwd components): a short program, one with every field cut, and one
    with no executable (a kernel helper)."""
    def components(parts):
        return b"".join(p.encode() + b"\0" for p in reversed(parts))

    def record(exe, argv, cwd, flags, comm=b"true", parent=b"bash"):
        exe_b, cwd_b = components(exe), components(cwd)
        head = struct.pack(
            "<QQQIIIIIIIHHHB5x16s16s",
            123456789, 4242, len(argv), 1000, 999, 1000, 1000, 1000, 3, 2049,
            len(exe_b), len(argv), len(cwd_b), flags, comm, parent,
        )
        assert len(head) == 96
        return head + exe_b + argv + cwd_b

    out("exec_record", "true", record(["usr", "bin", "true"], b"/bin/true\0marker-1\0", ["tmp", "storm"], 0))
    out("exec_record", "tor", record(["home", "pupil", "tor-browser", "start"], b"./tor-browser/start\0--detach\0", ["home", "pupil"], 0, b"start"))
    out("exec_record", "cut", record(["a"] * 48, b"x" * 8192, ["d"] * 48, 1 | 2 | 4))
    out("exec_record", "no_exe", record([], b"", [], 8 | 16, b"kworker", b"kthreadd"))


def procfs():
    out("procfs", "cmdline", b"/usr/bin/python3\0-c\0print('hi')\0")
    out("procfs", "cmdline-empty-args", b"sleep\0\0\x00300\0")
    out("procfs", "stat",
        "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 "
        "10000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    out("procfs", "stat-kthread",
        "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 "
        "18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    out("procfs", "status",
        "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\n"
        "PPid:\t1000\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n")


def utf16z(s):
    return s.encode("utf-16-le") + b"\0\0"


def etw_payload(version):
    v = struct.pack("<I", 4242)
    if version >= 3:
        v += struct.pack("<Q", 77)
    v += struct.pack("<QI", 133_485_408_000_000_000, 1000)
    if version >= 3:
        v += struct.pack("<Q", 66)
    v += struct.pack("<I", 2)
    if version >= 1:
        v += struct.pack("<I", 0x10)
    if version >= 3:
        v += struct.pack("<II", 3, 0) + bytes([1, 1, 0, 0, 0, 0, 0, 16]) + struct.pack("<I", 0x2000)
    v += utf16z(r"\Device\HarddiskVolume3\Windows\System32\cmd.exe")
    if version >= 2:
        v += struct.pack("<II", 0xDEAD, 0xBEEF) + utf16z("Pkg_1.0_x64__abc") + utf16z("App")
    if version >= 4:
        v += struct.pack("<I", 0x1234)
    return bytes([version]) + v


def etw():
    for version in range(5):
        out("etw_layout", f"v{version}", etw_payload(version))


def schema(name):
    """A schema constant of the agent's test fixtures (the browsers' real tables)."""
    text = open(os.path.join(ROOT, "agent/src/sources/browsing/fixtures.rs")).read()
    return re.search(name + r': &str = "(.*?)";', text, re.S).group(1)


VISITS = [
    ("https://www.bbc.co.uk/bitesize", "KS2 Maths - BBC Bitesize", 1),
    ("https://www.google.co.uk/search?q=volcano+facts&hl=en", "volcano facts - Google Search", 1),
    ("https://alice:s3cret@intranet.school.test/grades", "Grades", 0),
    ("https://www.youtube.com/results?search_query=minecraft+tips", "YouTube", 0),
]
# 2026-11-22 07:15:53 UTC and on, a minute apart (Unix microseconds).
T0 = 1_795_331_753_857_094
CHROMIUM_DELTA = 11_644_473_600_000_000


def chromium_db(path):
    c = sqlite3.connect(path)
    c.executescript(schema("CHROMIUM_SCHEMA"))
    for i, (url, title, transition) in enumerate(VISITS):
        t = T0 + i * 60_000_000 + CHROMIUM_DELTA
        c.execute("INSERT INTO urls(url, title, visit_count, last_visit_time) VALUES (?, ?, 1, ?)",
                  (url, title, t))
        c.execute("INSERT INTO visits(url, visit_time, transition) VALUES (?, ?, ?)",
                  (c.execute("SELECT last_insert_rowid()").fetchone()[0], t, 0x30000000 | transition))
    c.commit()
    return c


def firefox_db(path, wal):
    c = sqlite3.connect(path)
    if wal:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA wal_autocheckpoint=0")
    c.executescript(schema("FIREFOX_SCHEMA"))
    for i, (url, title, transition) in enumerate(VISITS):
        c.execute("INSERT INTO moz_places(url, title, rev_host, visit_count, last_visit_date, guid) "
                  "VALUES (?, ?, '', 1, ?, ?)", (url, title, T0 + i * 60_000_000, f"guid{i:08}"))
        place = c.execute("SELECT last_insert_rowid()").fetchone()[0]
        c.execute("INSERT INTO moz_historyvisits(from_visit, place_id, visit_date, visit_type, session) "
                  "VALUES (0, ?, ?, ?, 0)", (place, T0 + i * 60_000_000, transition + 1))
    c.commit()
    return c


def history():
    tmp = tempfile.mkdtemp()
    try:
        p = os.path.join(tmp, "History")
        chromium_db(p).close()
        out("history", "chromium", b"\x00" + open(p, "rb").read())
        p = os.path.join(tmp, "places.sqlite")
        firefox_db(p, wal=False).close()
        out("history", "firefox", b"\x01" + open(p, "rb").read())
        # Firefox in WAL mode with the visits still in the uncheckpointed log: copied while open.
        p = os.path.join(tmp, "places-wal.sqlite")
        c = firefox_db(p, wal=True)
        db, wal = open(p, "rb").read(), open(p + "-wal", "rb").read()
        out("history", "firefox-wal", b"\x03" + struct.pack("<I", len(db)) + db + wal)
        c.close()
    finally:
        shutil.rmtree(tmp)
    # history_rows decodes its input with `arbitrary`: seeded random bytes are as good a start
    # as any, and short.
    rng = random.Random(7)
    for i in range(4):
        out("history_rows", f"random-{i}", bytes(rng.randrange(256) for _ in range(64 * (i + 1))))


URLS = [
    "http://WWW.Example.COM:8080/a/../b/./c//d?x=1#frag",
    "https://user:pass@www2.bad.example./path%2Fmore%41?q=%7e",
    "ftp01.files.example/pub",
    "http://0x7f.1/admin",
    "http://[::1]:443/x",
    "https://xn--nxasmq6b.example/ünïcödé path",
    "www.10.1.2.3/index.html",
    "host%2Fpath%3Fq",
]

SEARCHES = [
    "https://www.google.com/search?q=volcano+facts&hl=en",
    "https://www.google.com.au/search?q=a%26b",
    "https://www.bing.com/search?q=caf%C3%A9+cr%C3%A8me",
    "https://html.duckduckgo.com/html/?q=rivers",
    "https://uk.search.yahoo.com/search;_ylt=AwrE?p=the+tudors&fr=yfp",
    "https://www.youtube.com/results?search_query=minecraft+tips",
    "https://www.ecosia.org/search?method=index&q=trees",
    "https://alice:s3cret@www.google.com/search?q=how+to+bypass+the+filter",
    "http://u:p@host.test:99999/x",
]


def urls():
    for i, u in enumerate(URLS):
        out("url_normalise", f"url-{i}", u)
    for i, u in enumerate(SEARCHES):
        out("search_terms", f"search-{i}", u)


def policies():
    parts = ["default_policy.toml", "default_web.toml", "default_schedule.toml", "default_keywords.toml"]
    text = "\n".join(open(os.path.join(ROOT, "collector/policy/src", p)).read() for p in parts)
    out("policy_file", "default", text)
    out("policy_file", "minimal", 'version = "1"\n')


# Protocol buffers, by hand (wire format: varints and length-delimited fields).
def varint(n):
    n &= (1 << 64) - 1
    b = b""
    while True:
        if n < 0x80:
            return b + bytes([n])
        b += bytes([n & 0x7F | 0x80])
        n >>= 7


def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def event(seq, kind_num, kind, user="pupil"):
    return (field(1, seq) + field(2, 1_795_428_000_000_000) + field(3, "ict-07") + field(4, user)
            + field(kind_num, kind))


def batch():
    process = (field(1, 4242) + field(2, 1000) + field(3, "/usr/bin/tor") + field(4, "tor")
               + field(5, "tor") + field(5, "--quiet") + field(6, 1000) + field(9, "netlink"))
    gap = field(1, "process") + field(2, "receive buffer overrun") + field(3, 12)
    usb = (field(1, "add") + field(2, "0781") + field(3, "5581") + field(4, "SanDisk")
           + field(5, "Ultra Fit") + field(6, "4C530001") + field(7, "08/06/50")
           + field(9, "sdb") + field(10, "/devices/pci0000:00/0000:00:14.0/usb1/1-2")
           + field(11, 1) + field(12, 5))
    session = (field(1, "logon") + field(2, "c2") + field(3, "pupil") + field(4, 1000)
               + field(5, "seat0") + field(10, "x11") + field(11, "user"))
    visit = (field(1, "visit") + field(2, "https://www.google.com/search?q=how+to+bypass+the+filter")
             + field(3, "proxy games unblocked") + field(4, 1_795_428_000_000_000) + field(5, "typed")
             + field(6, "chromium") + field(7, "/home/pupil/.config/chromium/Default")
             + field(8, "how to bypass the filter") + field(9, "google"))
    events = [event(1, 10, process), event(2, 11, gap), event(3, 12, usb), event(4, 13, session),
              event(5, 14, visit)]
    out("batch", "every-kind", b"".join(field(1, e) for e in events))
    out("batch", "one-visit", field(1, event(9, 14, visit)))
    long_title = field(1, "visit") + field(3, "x" * 5000) + field(2, "https://example.test/" + "a" * 9000)
    out("batch", "over-budget", field(1, event(10, 14, long_title)))


if __name__ == "__main__":
    uevents()
    proc_connector()
    exec_record()
    procfs()
    etw()
    history()
    urls()
    policies()
    batch()
