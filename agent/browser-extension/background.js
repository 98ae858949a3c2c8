// Invigilator browser extension: background (Chromium service worker, Firefox
// event page). Reports each top-level http(s) page visit to the Invigilator
// agent on this device over native messaging ("uk.invigilator.agent").
//
// Every visit goes first into a persistent queue in storage.local ("pending")
// and leaves it only when the agent answers {"ack": id} (stored) or
// {"reject": id, "why": ...} (refused for good). Whatever is still pending is
// sent again, oldest first, each time the port (re)connects.
//
// Plain classic script, no modules, no dependencies. It touches the browser
// only through `api`, so the node test (test/queue.test.mjs) can run it with a
// fake `chrome` object. The INVIGILATOR_* globals exist only for that test;
// nothing sets them in a browser, so the defaults below apply there.
//
// Holds no secrets: the agent on the device authenticates to the school's
// collector, not the extension. On a device with no agent (a Chromebook) the
// school's policy names the collector and visits go there over HTTPS; the
// device's client certificate, which the browser holds, is its identity.

"use strict";

(() => {
  const api = globalThis.browser ?? globalThis.chrome;

  const HOST = "uk.invigilator.agent";
  const TITLE_WAIT_MS = globalThis.INVIGILATOR_TITLE_WAIT_MS ?? 700;
  const TITLE_POLL_MS = Math.max(10, Math.floor(TITLE_WAIT_MS / 5));
  // In-page navigations (a single-page app's history.pushState: a YouTube video, a search
  // typed into a page that never reloads) come in bursts; a tab's latest one is reported
  // this long after the first of the burst, so a page rewriting its address as you scroll
  // is at most one visit a second, and a burst that never ends is still reported.
  const IN_PAGE_WAIT_MS = globalThis.INVIGILATOR_IN_PAGE_WAIT_MS ?? 1000;
  const BACKOFF_MIN_MS = globalThis.INVIGILATOR_BACKOFF_MIN_MS ?? 1000;
  const BACKOFF_MAX_MS = globalThis.INVIGILATOR_BACKOFF_MAX_MS ?? 30000;
  const QUEUE_MAX = globalThis.INVIGILATOR_QUEUE_MAX ?? 5000;
  // Chromium's storage.local quota is 5 MiB before Chrome 114 (10 MiB after)
  // without "unlimitedStorage"; records are small (~300 bytes) but a queue of
  // long URLs must not hit it, so the queue is also bounded in size.
  const QUEUE_MAX_CHARS = globalThis.INVIGILATOR_QUEUE_MAX_CHARS ?? 4000000;
  const URL_MAX = 8192;
  const TITLE_MAX = 1024;
  const ACTION_TITLE = "Monitored by your school";

  const BROWSER = detectBrowser();
  const VERSION = manifestVersion();

  // ---------------------------------------------------------------- helpers

  function detectBrowser() {
    const ff = globalThis.browser;
    if (ff && ff.runtime && typeof ff.runtime.getBrowserInfo === "function") {
      return "firefox";
    }
    const nav = globalThis.navigator;
    if (nav && nav.brave) return "brave";
    const brands = (nav && nav.userAgentData && nav.userAgentData.brands) || [];
    const has = (name) => brands.some((b) => b && b.brand === name);
    if (has("Brave")) return "brave";
    if (has("Microsoft Edge")) return "edge";
    if (has("Google Chrome")) return "chrome";
    return "chromium";
  }

  function manifestVersion() {
    try {
      return String(api.runtime.getManifest().version);
    } catch (_) {
      return "0.0.0";
    }
  }

  // Cut to at most `max` UTF-16 units without splitting a surrogate pair.
  function truncate(s, max) {
    if (typeof s !== "string") return "";
    if (s.length <= max) return s;
    let end = max;
    const last = s.charCodeAt(end - 1);
    if (last >= 0xd800 && last <= 0xdbff) end -= 1;
    return s.slice(0, end);
  }

  function isReported(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url);
  }

  // A title is worth sending if there is one and it is not just the URL
  // (Chromium shows the URL, sometimes without its scheme, until the page
  // has a <title>).
  function usableTitle(title, url) {
    if (typeof title !== "string" || title.trim() === "") return false;
    if (title === url) return false;
    const bare = url.replace(/^https?:\/\//i, "");
    return title !== bare && title !== bare.replace(/\/$/, "");
  }

  function setActionTitle(title) {
    try {
      const p = api.action && api.action.setTitle({ title });
      if (p && typeof p.catch === "function") p.catch(() => {});
    } catch (_) {
      // no action API (should not happen in MV3): nothing to show
    }
  }

  function noteAgentState(connected, error) {
    // For the notice page (technicians); not part of the queue.
    try {
      const p = api.storage.local.set({
        agent: { connected, error: error || "", at: Date.now() },
      });
      if (p && typeof p.catch === "function") p.catch(() => {});
    } catch (_) {
      // storage unavailable: the notice just shows less
    }
  }

  // ------------------------------------------------------------------ queue
  //
  // All changes to "pending" go through one promise chain, so concurrent
  // navigations and acks cannot overwrite each other's read-modify-write.
  // Changes that arrive while a step is running are coalesced into the next
  // step (one storage write for a burst of acks, e.g. after a reconnect).

  let chain = Promise.resolve();
  let stepQueued = false;
  let toAdd = []; // records waiting to be persisted
  let toRemove = new Set(); // ids acked or rejected, to forget
  let dropsReported = 0; // of "dropped", how many the agent has recorded (hello reply)

  function schedule() {
    if (!stepQueued) {
      stepQueued = true;
      chain = chain.then(step).catch((err) => {
        console.error("Invigilator: queue update failed:", err);
      });
    }
    return chain;
  }

  async function step() {
    await modeReady;
    stepQueued = false;
    const adds = toAdd;
    const removes = toRemove;
    const reported = dropsReported;
    toAdd = [];
    toRemove = new Set();
    dropsReported = 0;

    let pending;
    let dropped;
    let changed = adds.length > 0;
    try {
      const got = await api.storage.local.get(["pending", "dropped", "next_n"]);
      pending = Array.isArray(got.pending) ? got.pending : [];
      dropped = Number.isFinite(got.dropped) ? got.dropped : 0;
      if (reported > 0) {
        dropped = Math.max(0, dropped - reported);
        changed = true;
      }
      const valid = pending.filter((r) => r && typeof r.id === "string");
      if (valid.length !== pending.length) changed = true;
      pending = valid.concat(adds);
      if (collectorUrl !== null && number(pending, got.next_n)) changed = true;
      if (removes.size > 0) {
        const before = pending.length;
        pending = pending.filter((r) => !removes.has(r.id));
        if (pending.length !== before) changed = true;
      }
      const excess = overflow(pending);
      if (excess > 0) {
        dropped += lostIn(pending.slice(0, excess));
        pending = pending.slice(excess);
        changed = true;
      }
      if (collectorUrl === null) {
        // Through the agent, losses are a count in the hello: no record of them is sent.
        const gaps = pending.filter((r) => r.type === "gap");
        if (gaps.length > 0) {
          dropped += lostIn(gaps);
          pending = pending.filter((r) => r.type !== "gap");
          changed = true;
        }
      } else if (dropped > 0) {
        // Straight to the collector, a loss is a numbered record, first in the queue, so the
        // collector stores it once however often it is sent. It takes the place of one more
        // of the oldest visits when the queue is full.
        if (pending.length >= QUEUE_MAX) dropped += lostIn(pending.splice(0, 1));
        pending.unshift({ type: "gap", id: crypto.randomUUID(), n: nextN++, lost: dropped });
        dropped = 0;
        changed = true;
      }
      if (changed) await api.storage.local.set({ pending, dropped, next_n: nextN });
    } catch (err) {
      // Keep the changes for the next step rather than losing them.
      toAdd = adds.concat(toAdd);
      for (const id of removes) toRemove.add(id);
      dropsReported += reported;
      // The agent still gets them now. Straight to the collector, nothing newly numbered
      // leaves before its number is stored: a number sent but not kept could be reused.
      if (pending && collectorUrl === null) pump(pending);
      if (toAdd.length > 0 || toRemove.size > 0 || dropsReported > 0) {
        setTimeout(schedule, 5000);
      }
      throw err;
    }
    pump(pending);
  }

  // Straight to the collector, every record carries its number in this instance's lane (the
  // collector stores a visit once per number). Numbers are never reused: the next one is kept
  // in storage with the queue, and in memory should a storage write fail. True if any changed.
  let nextN = 1;
  function number(pending, storedNext) {
    if (Number.isSafeInteger(storedNext) && storedNext > nextN) nextN = storedNext;
    let changed = false;
    for (const r of pending) {
      if (Number.isSafeInteger(r.n) && r.n > 0) continue;
      r.n = nextN++;
      changed = true;
    }
    return changed;
  }

  // How many visits the records stand for: a gap record, the visits it counts.
  function lostIn(records) {
    let lost = 0;
    for (const r of records) {
      lost += r && r.type === "gap" ? Math.max(0, Number(r.lost) || 0) : 1;
    }
    return lost;
  }

  // How many of the oldest records must go to respect both bounds.
  function overflow(pending) {
    let excess = Math.max(0, pending.length - QUEUE_MAX);
    let chars = 0;
    for (let i = pending.length - 1; i >= excess; i--) {
      chars += JSON.stringify(pending[i]).length + 1;
      if (chars > QUEUE_MAX_CHARS) return i + 1;
    }
    return excess;
  }

  function enqueue(record) {
    toAdd.push(record);
    return schedule();
  }

  function forget(id) {
    toRemove.add(id);
    return schedule();
  }

  // ------------------------------------------------------------ native port

  let port = null; // open port that has had its hello
  let connecting = false;
  let sent = new Set(); // ids already posted on the current port
  let backoff = BACKOFF_MIN_MS;
  let reconnectTimer = null;

  // Post, in queue order, every pending record not yet sent on this port.
  function pump(pending) {
    if (!port) return;
    const live = new Set();
    for (const record of pending) {
      live.add(record.id);
      if (sent.has(record.id) || toRemove.has(record.id)) continue;
      try {
        port.postMessage(record);
      } catch (err) {
        // The port died under us; onDisconnect reconnects and resends.
        console.warn("Invigilator: send failed:", err);
        return;
      }
      sent.add(record.id);
    }
    for (const id of sent) if (!live.has(id)) sent.delete(id);
  }

  async function connect() {
    if (port || connecting || reconnectTimer !== null) return;
    connecting = true;
    await modeReady;
    let incognitoAccess = false;
    try {
      incognitoAccess = Boolean(await api.extension.isAllowedIncognitoAccess());
    } catch (_) {
      incognitoAccess = false;
    }
    if (collectorUrl !== null) {
      connectDirect({ version: VERSION, browser: BROWSER, incognito_access: incognitoAccess });
      return;
    }
    // Visits the full queue had to drop: the agent records the loss (a gap the school
    // sees), and says how many, which then leave the count.
    let dropped = 0;
    try {
      const got = await api.storage.local.get(["dropped"]);
      dropped = Number.isFinite(got.dropped) ? got.dropped : 0;
    } catch (_) {
      dropped = 0;
    }
    let p;
    try {
      p = api.runtime.connectNative(HOST);
    } catch (err) {
      connecting = false;
      console.warn("Invigilator: cannot reach the agent:", err);
      noteAgentState(false, String(err && err.message ? err.message : err));
      retryLater();
      return;
    }
    p.onMessage.addListener((msg) => onAgentMessage(p, msg));
    p.onDisconnect.addListener(() => onDisconnect(p));
    try {
      p.postMessage({
        type: "hello",
        version: VERSION,
        browser: BROWSER,
        incognito_access: incognitoAccess,
        dropped,
      });
    } catch (err) {
      // Already disconnected: onDisconnect (if it fires) or this retries.
      connecting = false;
      console.warn("Invigilator: hello failed:", err);
      try {
        p.disconnect();
      } catch (_) {}
      retryLater();
      return;
    }
    connecting = false;
    port = p;
    sent = new Set();
    schedule(); // resend everything still pending, oldest first
  }

  function onAgentMessage(p, msg) {
    if (p !== port) return;
    backoff = BACKOFF_MIN_MS; // the agent is there and talking
    if (!msg || typeof msg !== "object") {
      console.warn("Invigilator: unexpected message from the agent:", msg);
      return;
    }
    if (typeof msg.ack === "string") {
      forget(msg.ack);
    } else if (typeof msg.reject === "string") {
      console.warn(
        "Invigilator: the agent refused visit " + msg.reject + ":",
        msg.why
      );
      forget(msg.reject);
    } else if (msg.hello === "ok") {
      noteAgentState(true, "");
      if (Number.isFinite(msg.dropped) && msg.dropped > 0) {
        dropsReported += msg.dropped;
        schedule();
      }
    } else {
      console.warn("Invigilator: unexpected message from the agent:", msg);
    }
  }

  function onDisconnect(p) {
    // Reading lastError marks it checked (Chromium); Firefox puts it on p.error.
    const lastError = api.runtime.lastError;
    const error = (lastError && lastError.message) || (p.error && p.error.message) || "";
    if (p !== port) return;
    port = null;
    sent = new Set();
    console.warn("Invigilator: agent disconnected" + (error ? ": " + error : ""));
    noteAgentState(false, error);
    retryLater();
  }

  function retryLater() {
    if (reconnectTimer !== null) return;
    const delay = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  // ----------------------------------------------------------- direct mode
  //
  // On a device with no agent (a Chromebook), the school's policy for this extension names the
  // collector (managed storage "collector_url"), and visits go there over HTTPS. The device is
  // identified by the client certificate the browser presents (the AutoSelectCertificateForUrls
  // policy): the extension still holds no secret. The same queue and acknowledgements serve:
  // a "port" here is an outbox that is uploaded, at most UPLOAD_MAX visits at a time, one upload
  // at a time; the reply acknowledges or rejects visits by id, and any failure closes the port,
  // which reconnects with back-off and sends everything still pending again.

  const UPLOAD_PATH = "/extension/v1/visits";
  const UPLOAD_MAX = 200;
  // An upload's JSON stays well under the collector's 4 MiB, whatever the pages' titles.
  const UPLOAD_MAX_CHARS = 1000000;
  const UPLOAD_TIMEOUT_MS = globalThis.INVIGILATOR_UPLOAD_TIMEOUT_MS ?? 30000;
  const KEEPALIVE = "invigilator-keepalive";

  let collectorUrl = null; // "https://host[:port]" when the school's policy names one
  const modeReady = readMode();

  async function readMode() {
    try {
      const managed = api.storage && api.storage.managed;
      if (!managed || typeof globalThis.fetch !== "function") return;
      const got = await managed.get(["collector_url"]);
      const url = got && typeof got.collector_url === "string" ? got.collector_url.trim() : "";
      if (/^https:\/\/[^/?#@\s]+\/?$/i.test(url)) {
        collectorUrl = url.replace(/\/$/, "");
      } else if (url) {
        console.warn("Invigilator: collector_url must be https://host[:port]; ignored:", url);
      }
    } catch (_) {
      // Not managed, or no managed storage (Firefox without a policy): the agent's host.
    }
  }

  let lane = null; // this instance's numbering lane, once the collector has given one

  async function currentLane() {
    if (lane === null) {
      const got = await api.storage.local.get(["lane"]);
      lane = Number.isSafeInteger(got.lane) && got.lane > 0 ? got.lane : 0;
    }
    return lane;
  }

  async function keepLane(value) {
    lane = value;
    await api.storage.local.set({ lane: value });
  }

  async function signedInUser() {
    try {
      const info = await api.identity.getProfileUserInfo({ accountStatus: "ANY" });
      return (info && typeof info.email === "string" && info.email) || "";
    } catch (_) {
      return "";
    }
  }

  function connectDirect(hello) {
    const p = {
      direct: true,
      outbox: [],
      busy: false,
      closed: false,
      hello,
      postMessage(record) {
        if (p.closed) throw new Error("the upload connection is closed");
        p.outbox.push(record);
        flush(p);
      },
      disconnect() {
        p.closed = true;
      },
    };
    connecting = false;
    port = p;
    sent = new Set();
    schedule(); // everything pending goes into the outbox, oldest first
    flush(p, true); // the hello (and a lane, the first time) even with nothing to send
  }

  // Uploads the outbox in order until it is empty; `always` uploads even an empty one (the
  // hello, and a keep-alive so the school sees the device is on).
  async function flush(p, always = false) {
    if (p.busy || p.closed || (!always && p.outbox.length === 0)) return;
    p.busy = true;
    try {
      for (;;) {
        if (p !== port || p.closed) return;
        const current = await currentLane();
        const batch = current > 0 ? firstBatch(p.outbox) : [];
        const body = { lane: current, user: await signedInUser(), visits: batch };
        if (p.hello) body.hello = p.hello;
        const reply = await upload(body);
        p.hello = null;
        backoff = BACKOFF_MIN_MS;
        noteAgentState(true, "");
        if (current === 0) {
          if (!Number.isSafeInteger(reply.lane) || reply.lane <= 0) {
            throw new Error("the collector gave no numbering lane");
          }
          await keepLane(reply.lane);
          continue; // now the visits, in that lane
        }
        p.outbox.splice(0, batch.length);
        const answered = new Set();
        for (const id of Array.isArray(reply.acked) ? reply.acked : []) {
          if (typeof id !== "string") continue;
          answered.add(id);
          onAgentMessage(p, { ack: id });
        }
        for (const r of Array.isArray(reply.rejected) ? reply.rejected : []) {
          if (!r || typeof r.id !== "string") continue;
          answered.add(r.id);
          onAgentMessage(p, { reject: r.id, why: r.why });
        }
        // A record neither acknowledged nor rejected stays pending: the connection is closed,
        // so that it is sent again on the next.
        if (batch.some((r) => !answered.has(r.id))) {
          throw new Error("the collector answered for only part of an upload");
        }
        if (p.outbox.length === 0) return;
      }
    } catch (err) {
      if (err && err.laneRefused) await keepLane(0).catch(() => {});
      // The collector's Retry-After, when it says to wait longer than the back-off would.
      if (err && err.retryAfterMs > backoff) backoff = Math.min(err.retryAfterMs, 10 * BACKOFF_MAX_MS);
      closeDirect(p, String((err && err.message) || err));
    } finally {
      p.busy = false;
    }
  }

  // The oldest records that fit one upload: at most UPLOAD_MAX, and UPLOAD_MAX_CHARS of JSON
  // (always at least one).
  function firstBatch(outbox) {
    let chars = 0;
    let n = 0;
    while (n < outbox.length && n < UPLOAD_MAX) {
      chars += JSON.stringify(outbox[n]).length + 1;
      if (n > 0 && chars > UPLOAD_MAX_CHARS) break;
      n += 1;
    }
    return outbox.slice(0, n);
  }

  async function upload(body) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), UPLOAD_TIMEOUT_MS);
    try {
      const res = await globalThis.fetch(collectorUrl + UPLOAD_PATH, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        credentials: "include", // the device's client certificate
        cache: "no-store",
        signal: abort.signal,
      });
      let reply = null;
      try {
        reply = await res.json();
      } catch (_) {
        reply = null;
      }
      if (res.ok && reply && typeof reply === "object") return reply;
      const why = (reply && typeof reply.error === "string" && reply.error) || "HTTP " + res.status;
      const err = new Error("the collector refused the upload: " + why);
      err.laneRefused = res.status === 409 && /\blane\b/.test(why);
      const after = Number(res.headers && res.headers.get && res.headers.get("retry-after"));
      if (Number.isFinite(after) && after > 0) err.retryAfterMs = after * 1000;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  function closeDirect(p, error) {
    p.closed = true;
    if (p !== port) return;
    port = null;
    sent = new Set();
    console.warn("Invigilator: cannot reach the collector: " + error);
    noteAgentState(false, error);
    retryLater();
  }

  function onAlarm(alarm) {
    if (!alarm || alarm.name !== KEEPALIVE) return;
    if (port && port.direct) flush(port, true);
    else if (!port) connect();
  }

  // ----------------------------------------------------------------- titles

  const titleWaiters = new Map(); // tabId -> Set of {url, finish}

  // Resolves with the tab's title as soon as one is known for `url`, or ""
  // after TITLE_WAIT_MS. `stale` is a title that does not count: the previous
  // page's, which an in-page navigation keeps until the app changes it.
  function waitForTitle(tabId, url, stale = "") {
    return new Promise((resolve) => {
      let done = false;
      let poller = null;
      const entry = { url, stale, finish };
      function finish(title) {
        if (done) return;
        done = true;
        clearTimeout(deadline);
        if (poller !== null) clearTimeout(poller);
        const set = titleWaiters.get(tabId);
        if (set) {
          set.delete(entry);
          if (set.size === 0) titleWaiters.delete(tabId);
        }
        resolve(title);
      }
      async function poll() {
        poller = null;
        try {
          const tab = await api.tabs.get(tabId);
          if (tab && tab.url === url && usableTitle(tab.title, url) && tab.title !== stale) {
            finish(tab.title);
          }
        } catch (_) {
          finish(""); // the tab is gone
        }
        if (!done) poller = setTimeout(poll, TITLE_POLL_MS);
      }
      const deadline = setTimeout(() => finish(""), TITLE_WAIT_MS);
      if (!titleWaiters.has(tabId)) titleWaiters.set(tabId, new Set());
      titleWaiters.get(tabId).add(entry);
      poller = setTimeout(poll, TITLE_POLL_MS);
    });
  }

  function onTabUpdated(tabId, changeInfo, tab) {
    if (!changeInfo || typeof changeInfo.title !== "string") return;
    const set = titleWaiters.get(tabId);
    if (!set) return;
    for (const entry of Array.from(set)) {
      if (tab && typeof tab.url === "string" && tab.url !== entry.url) continue;
      if (usableTitle(changeInfo.title, entry.url) && changeInfo.title !== entry.stale) {
        entry.finish(changeInfo.title);
      }
    }
  }

  // ----------------------------------------------------------------- visits

  async function tabIncognito(tabId) {
    try {
      const tab = await api.tabs.get(tabId);
      return Boolean(tab && tab.incognito);
    } catch (_) {
      return false; // the tab is gone
    }
  }

  function visitRecord({ url, title, transition, incognito, time }) {
    return {
      type: "visit",
      id: crypto.randomUUID(),
      url: truncate(url, URL_MAX),
      title: truncate(title, TITLE_MAX),
      transition: typeof transition === "string" && transition ? transition : "link",
      incognito: Boolean(incognito),
      time: Math.round(Number(time) || Date.now()),
      browser: BROWSER,
    };
  }

  const committedTabs = new Set(); // tabs with a top-level commit seen here
  // tabId -> { url: without its fragment, title }: the tab's last reported visit.
  const lastReported = new Map();
  const inPageWaiting = new Map(); // tabId -> the in-page navigation waiting its turn

  function withoutFragment(url) {
    const hash = url.indexOf("#");
    return hash < 0 ? url : url.slice(0, hash);
  }

  async function onCommitted(details) {
    if (!details || details.frameId !== 0) return;
    committedTabs.add(details.tabId);
    cancelInPage(details.tabId); // a whole new page supersedes it
    if (!isReported(details.url)) return;
    const last = { url: withoutFragment(details.url), title: "" };
    lastReported.set(details.tabId, last);
    const [incognito, title] = await Promise.all([
      tabIncognito(details.tabId),
      waitForTitle(details.tabId, details.url),
    ]);
    last.title = title;
    await enqueue(
      visitRecord({
        url: details.url,
        title,
        transition: details.transitionType,
        incognito,
        time: details.timeStamp,
      })
    );
  }

  // A single-page app moved to another address without loading a page
  // (history.pushState). Reported as transition "in_page" IN_PAGE_WAIT_MS after
  // the first move of a burst, with the latest address, unless that is where the
  // tab's last report was (a fragment change, or back to the same address).
  function onHistoryStateUpdated(details) {
    if (!details || details.frameId !== 0 || !isReported(details.url)) return;
    const tabId = details.tabId;
    const waiting = inPageWaiting.get(tabId);
    if (waiting) {
      // Its timer stands: the latest address goes when it fires.
      waiting.url = details.url;
      waiting.time = details.timeStamp;
      return;
    }
    const entry = { url: details.url, time: details.timeStamp, timer: null };
    entry.timer = setTimeout(() => {
      if (inPageWaiting.get(tabId) !== entry) return;
      inPageWaiting.delete(tabId);
      reportInPage(tabId, entry).catch((err) => {
        console.error("Invigilator: could not record an in-page visit:", err);
      });
    }, IN_PAGE_WAIT_MS);
    inPageWaiting.set(tabId, entry);
  }

  async function reportInPage(tabId, entry) {
    const before = lastReported.get(tabId) || { url: "", title: "" };
    const url = withoutFragment(entry.url);
    if (before.url === url) return;
    const last = { url, title: before.title };
    lastReported.set(tabId, last);
    const [incognito, title] = await Promise.all([
      tabIncognito(tabId),
      waitForTitle(tabId, entry.url, before.title),
    ]);
    last.title = title || before.title;
    await enqueue(
      visitRecord({ url: entry.url, title, transition: "in_page", incognito, time: entry.time })
    );
  }

  function cancelInPage(tabId) {
    const waiting = inPageWaiting.get(tabId);
    if (waiting) clearTimeout(waiting.timer);
    inPageWaiting.delete(tabId);
  }

  function onTabRemoved(tabId) {
    cancelInPage(tabId);
    lastReported.delete(tabId);
    committedTabs.delete(tabId);
  }

  // When the browser starts, or the extension is installed or updated, pages
  // can commit before this script has registered its listeners (the first
  // window's pages, or tabs already open when the extension is force-
  // installed). Report the pages open at that moment, once, as "start_page"
  // (a Chromium transition type). Tabs this worker has already seen commit
  // are left to onCommitted; discarded tabs (restored but not loaded) were
  // not visited and are skipped.
  async function reportOpenTabs() {
    let tabs;
    try {
      tabs = await api.tabs.query({});
    } catch (err) {
      console.warn("Invigilator: cannot list open tabs:", err);
      return;
    }
    for (const tab of tabs || []) {
      if (!tab || committedTabs.has(tab.id) || tab.discarded) continue;
      if (!isReported(tab.url)) continue;
      committedTabs.add(tab.id);
      enqueue(
        visitRecord({
          url: tab.url,
          title: usableTitle(tab.title, tab.url) ? tab.title : "",
          transition: "start_page",
          incognito: tab.incognito,
          time: Date.now(),
        })
      );
    }
  }

  // ------------------------------------------------------------- listeners
  // Registered synchronously at the top level, as MV3 service workers need.

  api.webNavigation.onCommitted.addListener((details) => {
    onCommitted(details).catch((err) => {
      console.error("Invigilator: could not record a visit:", err);
    });
  });
  api.webNavigation.onHistoryStateUpdated.addListener(onHistoryStateUpdated);
  api.tabs.onUpdated.addListener(onTabUpdated);
  api.tabs.onRemoved.addListener(onTabRemoved);
  function onBrowserOrExtensionStart() {
    connect();
    reportOpenTabs().catch((err) => {
      console.error("Invigilator: could not report open tabs:", err);
    });
  }
  api.runtime.onStartup.addListener(onBrowserOrExtensionStart);
  api.runtime.onInstalled.addListener(onBrowserOrExtensionStart);

  if (api.alarms) {
    // A service worker sleeps: the alarm wakes it to retry, and to tell the collector the
    // device is on when nothing is being browsed.
    api.alarms.onAlarm.addListener(onAlarm);
    try {
      const p = api.alarms.create(KEEPALIVE, { periodInMinutes: 1 });
      if (p && typeof p.catch === "function") p.catch(() => {});
    } catch (_) {
      // no alarms: the back-off timers still retry while the worker runs
    }
  }

  setActionTitle(ACTION_TITLE);
  connect();
})();
