// Tests for background.js with a fake `chrome` object. No dependencies:
//
//     node --test agent/browser-extension/test/
//
// background.js is a classic script; each test runs a fresh copy of it in its
// own vm context that provides chrome, crypto, setTimeout, navigator and
// console, with short timers (INVIGILATOR_* globals).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

const SOURCE_PATH = fileURLToPath(new URL("../background.js", import.meta.url));
const SOURCE = readFileSync(SOURCE_PATH, "utf8");
const TITLE_WAIT_MS = 40;
const IN_PAGE_WAIT_MS = 30;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const clone = (v) => (v === undefined ? undefined : JSON.parse(JSON.stringify(v)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Let other promise chains run, as a real storage call would.
const yieldTurn = () => new Promise((r) => setImmediate(r));

function event() {
  const listeners = [];
  return {
    listeners,
    addListener(f) {
      listeners.push(f);
    },
    fire(...args) {
      for (const f of listeners) f(...args);
    },
  };
}

// A fresh fake browser plus a fresh instance of background.js.
function load({ globals = {}, navigator = {}, namespace = "chrome", extra = {} } = {}) {
  const store = {};
  const ports = [];
  const tabs = new Map();
  const warnings = [];
  const timers = new Set();
  let actionTitle = null;

  const api = {
    runtime: {
      id: "mkjmmkmajbhcpdaljidmdhfegfobbiin",
      lastError: undefined,
      getManifest: () => ({ version: "0.1.0" }),
      connectNative(name) {
        const port = {
          name,
          connected: true,
          messages: [],
          onMessage: event(),
          onDisconnect: event(),
          postMessage(m) {
            if (!port.connected) throw new Error("Attempting to use a disconnected port object");
            // What the browser would send: JSON, plus the pending ids at that moment
            // (a record must be in storage before it is sent).
            port.messages.push(clone(m));
            port.pendingAtSend.push((store.pending || []).map((r) => r.id));
          },
          pendingAtSend: [],
          disconnect() {
            port.connected = false;
          },
          // test helpers
          reply(m) {
            port.onMessage.fire(clone(m), port);
          },
          drop(message) {
            port.connected = false;
            api.runtime.lastError = message ? { message } : undefined;
            port.onDisconnect.fire(port);
            api.runtime.lastError = undefined;
          },
          visits() {
            return port.messages.filter((m) => m.type === "visit");
          },
        };
        ports.push(port);
        return port;
      },
      onStartup: event(),
      onInstalled: event(),
      ...(extra.runtime || {}),
    },
    extension: { isAllowedIncognitoAccess: async () => false },
    storage: {
      ...(extra.storage || {}),
      local: {
        async get(keys) {
          await yieldTurn();
          const out = {};
          for (const k of [].concat(keys)) if (k in store) out[k] = clone(store[k]);
          return out;
        },
        async set(items) {
          await yieldTurn();
          for (const [k, v] of Object.entries(items)) store[k] = clone(v);
        },
      },
    },
    webNavigation: { onCommitted: event(), onHistoryStateUpdated: event() },
    tabs: {
      async get(id) {
        await yieldTurn();
        if (!tabs.has(id)) throw new Error("No tab with id: " + id + ".");
        return clone(tabs.get(id));
      },
      async query() {
        await yieldTurn();
        return [...tabs.values()].map(clone);
      },
      onUpdated: event(),
      onRemoved: event(),
    },
    action: {
      async setTitle({ title }) {
        actionTitle = title;
      },
    },
    ...(extra.api || {}),
  };

  const context = vm.createContext({
    [namespace]: api,
    crypto: globalThis.crypto,
    navigator,
    setTimeout(f, ms) {
      const t = setTimeout(() => {
        timers.delete(t);
        f();
      }, ms);
      timers.add(t);
      return t;
    },
    clearTimeout(t) {
      timers.delete(t);
      clearTimeout(t);
    },
    console: {
      log() {},
      info() {},
      error(...a) {
        warnings.push(["error", ...a].join(" "));
      },
      warn(...a) {
        warnings.push(a.join(" "));
      },
    },
    INVIGILATOR_TITLE_WAIT_MS: TITLE_WAIT_MS,
    INVIGILATOR_IN_PAGE_WAIT_MS: IN_PAGE_WAIT_MS,
    INVIGILATOR_BACKOFF_MIN_MS: 10,
    INVIGILATOR_BACKOFF_MAX_MS: 40,
    ...globals,
  });
  vm.runInContext(SOURCE, context, { filename: SOURCE_PATH });

  let nextTime = 1764780000000;
  return {
    api,
    store,
    ports,
    tabs,
    warnings,
    get actionTitle() {
      return actionTitle;
    },
    port() {
      return ports[ports.length - 1];
    },
    pending() {
      return store.pending || [];
    },
    commit(details) {
      nextTime += 1000;
      api.webNavigation.onCommitted.fire({
        frameId: 0,
        parentFrameId: -1,
        tabId: 1,
        transitionType: "link",
        timeStamp: nextTime + 0.4,
        ...details,
      });
    },
    // A single-page app's history.pushState in tab `tabId`, to `url`.
    pushState(tabId, url) {
      nextTime += 1000;
      api.webNavigation.onHistoryStateUpdated.fire({
        frameId: 0,
        parentFrameId: -1,
        tabId,
        url,
        transitionType: "link",
        timeStamp: nextTime + 0.4,
      });
    },
    // Open a tab whose page already has a title, and commit it.
    visit(tabId, url, extraTab = {}) {
      tabs.set(tabId, { id: tabId, url, title: "Title of " + url, incognito: false, ...extraTab });
      this.commit({ tabId, url });
    },
    close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}

async function waitFor(cond, what, ms = 2000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return;
    await sleep(2);
  }
  assert.fail("timed out waiting for " + what);
}

async function connected(env) {
  await waitFor(() => env.ports.length > 0 && env.port().messages.length > 0, "hello");
  return env.port();
}

test("hello comes first and describes the extension", async () => {
  const env = load();
  try {
    const port = await connected(env);
    assert.equal(port.name, "uk.invigilator.agent");
    assert.deepEqual(port.messages[0], {
      type: "hello",
      version: "0.1.0",
      browser: "chromium",
      incognito_access: false,
      dropped: 0,
    });
    assert.equal(env.actionTitle, "Monitored by your school");
  } finally {
    env.close();
  }
});

test("a top-level commit is queued, then sent; ack forgets it", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.tabs.set(1, { id: 1, url: "https://example.org/a", title: "Example A", incognito: false });
    env.commit({ url: "https://example.org/a", transitionType: "typed", timeStamp: 1764780000000.4 });
    await waitFor(() => port.visits().length === 1, "the visit");
    const v = port.visits()[0];
    assert.match(v.id, UUID);
    assert.deepEqual(v, {
      type: "visit",
      id: v.id,
      url: "https://example.org/a",
      title: "Example A",
      transition: "typed",
      incognito: false,
      time: 1764780000000,
      browser: "chromium",
    });
    // It was in storage when it was sent, and stays there until acked.
    assert.deepEqual(port.pendingAtSend[1], [v.id]);
    assert.deepEqual(env.pending().map((r) => r.id), [v.id]);
    port.reply({ hello: "ok" });
    port.reply({ ack: v.id });
    await waitFor(() => env.pending().length === 0, "the ack to empty the queue");
    assert.equal(env.store.agent.connected, true);
  } finally {
    env.close();
  }
});

test("reject forgets the record and warns", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.visit(1, "https://example.org/refused");
    await waitFor(() => port.visits().length === 1, "the visit");
    const id = port.visits()[0].id;
    port.reply({ reject: id, why: "url too long" });
    await waitFor(() => env.pending().length === 0, "the reject to empty the queue");
    assert.ok(env.warnings.some((w) => w.includes(id) && w.includes("url too long")), env.warnings.join("\n"));
  } finally {
    env.close();
  }
});

test("disconnect, then reconnect resends what is pending, oldest first", async () => {
  const env = load();
  try {
    const first = await connected(env);
    for (let i = 0; i < 3; i++) {
      env.visit(10 + i, "https://example.org/" + i);
      await waitFor(() => first.visits().length === i + 1, "visit " + i);
    }
    const ids = first.visits().map((v) => v.id);
    first.reply({ ack: ids[1] });
    await waitFor(() => env.pending().length === 2, "the ack");

    first.drop("Native host has exited.");
    assert.ok(env.warnings.some((w) => w.includes("Native host has exited.")));
    await waitFor(() => env.ports.length === 2 && env.port().visits().length === 2, "the resend");
    const second = env.port();
    assert.equal(second.messages[0].type, "hello");
    assert.deepEqual(second.visits().map((v) => v.id), [ids[0], ids[2]]);
    assert.deepEqual(second.visits()[0], first.visits()[0]); // the same record, same id

    // A new visit after the reconnect goes after them, and nothing is sent twice.
    env.visit(20, "https://example.org/after");
    await waitFor(() => second.visits().length === 3, "the new visit");
    assert.equal(second.visits()[2].url, "https://example.org/after");
    await sleep(TITLE_WAIT_MS);
    assert.equal(second.visits().length, 3);
    for (const v of second.visits()) second.reply({ ack: v.id });
    await waitFor(() => env.pending().length === 0, "the acks");
  } finally {
    env.close();
  }
});

test("reconnect backs off while the host is missing, and resends once it is back", async () => {
  const env = load();
  try {
    let port = await connected(env);
    env.visit(1, "https://example.org/offline");
    await waitFor(() => port.visits().length === 1, "the visit");
    const id = port.visits()[0].id;
    for (let i = 0; i < 4; i++) {
      port.drop("Specified native messaging host not found.");
      await waitFor(() => env.ports.length === i + 2, "reconnect " + (i + 1));
      port = env.port();
    }
    await waitFor(() => port.visits().length === 1, "the resend");
    assert.equal(port.visits()[0].id, id);
    assert.equal(env.store.agent.connected, false);
    assert.equal(env.api.runtime.lastError, undefined);
  } finally {
    env.close();
  }
});

test("subframes and non-http(s) URLs are ignored", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.tabs.set(1, { id: 1, url: "https://example.org/", title: "Top", incognito: false });
    env.commit({ url: "https://ads.example.net/frame", frameId: 3, parentFrameId: 0 });
    for (const url of [
      "chrome://newtab/",
      "about:blank",
      "edge://settings/",
      "moz-extension://0c6c/notice.html",
      "chrome-extension://abc/notice.html",
      "file:///home/pupil/a.html",
      "data:text/html,hi",
      "view-source:https://example.org/",
    ]) {
      env.commit({ url });
    }
    await sleep(TITLE_WAIT_MS * 3);
    assert.equal(port.visits().length, 0);
    assert.deepEqual(env.pending(), []);
    env.commit({ url: "HTTP://EXAMPLE.ORG/" }); // any case of the scheme
    await waitFor(() => port.visits().length === 1, "the http visit");
  } finally {
    env.close();
  }
});

test("the queue keeps the newest records and counts the ones it drops", async () => {
  const env = load({ globals: { INVIGILATOR_QUEUE_MAX: 5 } });
  try {
    await connected(env);
    for (let i = 0; i < 8; i++) {
      env.visit(100 + i, "https://example.org/" + i);
      await waitFor(
        () => env.pending().length + (env.store.dropped || 0) === i + 1,
        "visit " + i + " in storage"
      );
    }
    assert.deepEqual(
      env.pending().map((r) => r.url),
      [3, 4, 5, 6, 7].map((i) => "https://example.org/" + i)
    );
    assert.equal(env.store.dropped, 3);
  } finally {
    env.close();
  }
});

test("the queue is also bounded in size", async () => {
  const env = load({ globals: { INVIGILATOR_QUEUE_MAX_CHARS: 1000 } });
  try {
    await connected(env);
    const long = "https://example.org/" + "x".repeat(300);
    for (let i = 0; i < 4; i++) {
      env.visit(100 + i, long + i);
      await waitFor(() => env.pending().length + (env.store.dropped || 0) === i + 1, "visit " + i);
    }
    assert.ok(JSON.stringify(env.pending()).length <= 1000);
    assert.equal(env.pending().at(-1).url, long + 3);
    assert.equal(env.pending().length + env.store.dropped, 4);
    assert.ok(env.store.dropped >= 1);
  } finally {
    env.close();
  }
});

test("simultaneous navigations are all kept (storage updates are serialised)", async () => {
  const env = load();
  try {
    const port = await connected(env);
    for (let i = 0; i < 25; i++) env.visit(200 + i, "https://example.org/p" + i);
    await waitFor(() => port.visits().length === 25, "25 visits sent");
    await waitFor(() => env.pending().length === 25, "25 visits stored");
    const ids = port.visits().map((v) => v.id);
    assert.equal(new Set(ids).size, 25);
    // acks arriving together are all applied
    for (const id of ids) port.reply({ ack: id });
    await waitFor(() => env.pending().length === 0, "all acks");
    assert.equal(port.visits().length, 25);
  } finally {
    env.close();
  }
});

test("titles: from onUpdated, empty when it is only the URL, never waiting long", async () => {
  const env = load();
  try {
    const port = await connected(env);

    // No title yet (Chromium shows the URL): onUpdated brings it.
    env.tabs.set(1, { id: 1, url: "https://example.org/slow", title: "example.org/slow", incognito: false });
    env.commit({ tabId: 1, url: "https://example.org/slow" });
    await sleep(5);
    env.api.tabs.onUpdated.fire(1, { title: "Slow page" }, { id: 1, url: "https://example.org/slow" });
    await waitFor(() => port.visits().length === 1, "the first visit");
    assert.equal(port.visits()[0].title, "Slow page");

    // Never a title: sent after the wait with "", not much later.
    env.tabs.set(2, { id: 2, url: "https://example.org/none", title: "https://example.org/none", incognito: false });
    const started = Date.now();
    env.commit({ tabId: 2, url: "https://example.org/none" });
    await waitFor(() => port.visits().length === 2, "the second visit");
    const took = Date.now() - started;
    assert.equal(port.visits()[1].title, "");
    assert.ok(took >= TITLE_WAIT_MS - 5 && took < TITLE_WAIT_MS + 150, "took " + took + " ms");

    // A title update for a different page in the same tab is not taken.
    env.tabs.set(3, { id: 3, url: "https://example.org/c", title: "https://example.org/c", incognito: false });
    env.commit({ tabId: 3, url: "https://example.org/c" });
    env.api.tabs.onUpdated.fire(3, { title: "Old page" }, { id: 3, url: "https://example.org/old" });
    await waitFor(() => port.visits().length === 3, "the third visit");
    assert.equal(port.visits()[2].title, "");
  } finally {
    env.close();
  }
});

test("incognito from the tab; a closed tab counts as not incognito; long fields are cut", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.visit(1, "https://example.org/private", { incognito: true });
    await waitFor(() => port.visits().length === 1, "the private visit");
    assert.equal(port.visits()[0].incognito, true);

    env.tabs.delete(2);
    env.commit({ tabId: 2, url: "https://example.org/gone", transitionType: undefined });
    await waitFor(() => port.visits().length === 2, "the closed-tab visit");
    assert.equal(port.visits()[1].incognito, false);
    assert.equal(port.visits()[1].title, "");
    assert.equal(port.visits()[1].transition, "link");

    const url = "https://example.org/?q=" + "a".repeat(10000);
    const title = "\u{1F600}".repeat(600); // 1200 UTF-16 units; a pair must not be split
    env.tabs.set(3, { id: 3, url, title, incognito: false });
    env.commit({ tabId: 3, url });
    await waitFor(() => port.visits().length === 3, "the long visit");
    assert.equal(port.visits()[2].url.length, 8192);
    assert.equal(port.visits()[2].title, "\u{1F600}".repeat(512));
  } finally {
    env.close();
  }
});

test("browser detection", async () => {
  const cases = [
    [{ navigator: { userAgentData: { brands: [{ brand: "Microsoft Edge", version: "140" }] } } }, "edge"],
    [{ navigator: { userAgentData: { brands: [{ brand: "Google Chrome", version: "140" }] } } }, "chrome"],
    [{ navigator: { brave: {}, userAgentData: { brands: [{ brand: "Chromium", version: "140" }] } } }, "brave"],
    [{ navigator: { userAgentData: { brands: [{ brand: "Chromium", version: "140" }] } } }, "chromium"],
    [{ namespace: "browser", extra: { runtime: { getBrowserInfo: async () => ({ name: "Firefox" }) } } }, "firefox"],
  ];
  for (const [opts, expected] of cases) {
    const env = load(opts);
    try {
      const port = await connected(env);
      assert.equal(port.messages[0].browser, expected);
      env.visit(1, "https://example.org/");
      await waitFor(() => port.visits().length === 1, "the visit");
      assert.equal(port.visits()[0].browser, expected);
    } finally {
      env.close();
    }
  }
});

test("startup events do not open a second port", async () => {
  const env = load();
  try {
    await connected(env);
    env.api.runtime.onStartup.fire();
    env.api.runtime.onInstalled.fire({ reason: "install" });
    await sleep(20);
    assert.equal(env.ports.length, 1);
  } finally {
    env.close();
  }
});

test("at browser start or install, open pages not seen committing are reported once", async () => {
  const env = load();
  try {
    const port = await connected(env);
    // Tab 2 commits while this script runs: onCommitted reports it, not the sweep.
    env.visit(2, "https://example.org/seen");
    env.tabs.set(1, { id: 1, url: "https://example.org/open", title: "Open page", incognito: true });
    env.tabs.set(3, { id: 3, url: "chrome://newtab/", title: "New Tab", incognito: false });
    env.tabs.set(4, { id: 4, url: "https://example.org/restored", title: "Restored", incognito: false, discarded: true });
    env.tabs.set(5, { id: 5, url: "https://example.org/untitled", title: "example.org/untitled", incognito: false });
    env.api.runtime.onInstalled.fire({ reason: "install" });
    env.api.runtime.onStartup.fire();
    await waitFor(() => port.visits().length === 3, "three visits");
    await sleep(TITLE_WAIT_MS * 2);
    const byUrl = Object.fromEntries(port.visits().map((v) => [v.url, v]));
    assert.deepEqual(Object.keys(byUrl).sort(), [
      "https://example.org/open",
      "https://example.org/seen",
      "https://example.org/untitled",
    ]);
    assert.equal(byUrl["https://example.org/seen"].transition, "link");
    const open = byUrl["https://example.org/open"];
    assert.match(open.id, UUID);
    assert.deepEqual(
      { ...open, id: undefined, time: undefined },
      {
        type: "visit",
        id: undefined,
        url: "https://example.org/open",
        title: "Open page",
        transition: "start_page",
        incognito: true,
        time: undefined,
        browser: "chromium",
      }
    );
    assert.ok(Math.abs(open.time - Date.now()) < 5000);
    assert.equal(byUrl["https://example.org/untitled"].title, "");
    assert.equal(env.ports.length, 1);
  } finally {
    env.close();
  }
});

test("a burst of in-page navigations is one visit, the latest, with its new title", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.visit(1, "https://www.youtube.com/");
    await waitFor(() => port.visits().length === 1, "the page itself");
    // The app moves through three addresses in a burst; only the last is a visit. Its title
    // is still the old page's until the app sets it.
    env.pushState(1, "https://www.youtube.com/results?search_query=a");
    env.pushState(1, "https://www.youtube.com/results?search_query=ab");
    const watch = "https://www.youtube.com/watch?v=how-to";
    env.tabs.set(1, { id: 1, url: watch, title: "Title of https://www.youtube.com/", incognito: false });
    env.pushState(1, watch);
    await sleep(IN_PAGE_WAIT_MS + TITLE_WAIT_MS / 2);
    env.tabs.set(1, { id: 1, url: watch, title: "How to - YouTube", incognito: false });
    await waitFor(() => port.visits().length === 2, "the in-page visit");
    const v = port.visits()[1];
    assert.equal(v.url, watch);
    assert.equal(v.transition, "in_page");
    assert.equal(v.title, "How to - YouTube", "not the previous page's title");
    // A fragment change, or the same address again, is no new visit.
    env.pushState(1, watch + "#t=30");
    await sleep(IN_PAGE_WAIT_MS + TITLE_WAIT_MS * 2);
    assert.equal(port.visits().length, 2);
  } finally {
    env.close();
  }
});

test("a whole page load supersedes an in-page navigation still waiting", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.visit(2, "https://app.example/");
    await waitFor(() => port.visits().length === 1, "the page itself");
    env.pushState(2, "https://app.example/inbox");
    env.visit(2, "https://other.example/");
    await sleep(IN_PAGE_WAIT_MS + TITLE_WAIT_MS * 2);
    await waitFor(() => port.visits().length === 2, "the new page");
    assert.deepEqual(
      port.visits().map((v) => [v.url, v.transition]),
      [
        ["https://app.example/", "link"],
        ["https://other.example/", "link"],
      ]
    );
    env.api.tabs.onRemoved.fire(2);
  } finally {
    env.close();
  }
});

test("the hello reports dropped visits, and the count falls by what the agent recorded", async () => {
  const env = load();
  try {
    env.store.dropped = 7; // before the hello reads it
    const port = await connected(env);
    assert.equal(port.messages[0].dropped, 7);
    env.store.dropped = 9; // two more dropped since the hello
    port.reply({ hello: "ok", dropped: 7 });
    await waitFor(() => env.store.dropped === 2, "the count to fall by 7");
    // An agent that records nothing says nothing: the count stays.
    port.reply({ hello: "ok" });
    await sleep(20);
    assert.equal(env.store.dropped, 2);
  } finally {
    env.close();
  }
});

test("a burst that never stops is still reported, at most once per wait", async () => {
  const env = load();
  try {
    const port = await connected(env);
    env.visit(3, "https://feed.example/");
    await waitFor(() => port.visits().length === 1, "the page itself");
    // A move every few milliseconds for three waits: reports come while it goes on.
    const end = Date.now() + IN_PAGE_WAIT_MS * 3;
    let n = 0;
    while (Date.now() < end) {
      const url = "https://feed.example/?item=" + n++;
      env.tabs.set(3, { id: 3, url, title: "Feed " + n, incognito: false });
      env.pushState(3, url);
      await sleep(3);
    }
    await waitFor(() => port.visits().length >= 3, "reports during the burst", 1000);
    const moves = port.visits().slice(1);
    assert.ok(moves.length <= 5, "at most one a wait: " + moves.length);
    assert.ok(moves.every((v) => v.transition === "in_page"));
  } finally {
    env.close();
  }
});

// ------------------------------------------------------------ direct mode

// A fake collector endpoint: records each upload's body, answers with `respond`.
function fakeCollector(respond) {
  const uploads = [];
  async function fetch(url, init) {
    await yieldTurn();
    const body = JSON.parse(init.body);
    uploads.push({ url, body, credentials: init.credentials });
    const { status, reply } = respond(body, uploads.length);
    uploads.at(-1).status = status;
    return {
      ok: status >= 200 && status < 300,
      status,
      async json() {
        return clone(reply);
      },
    };
  }
  return { uploads, fetch };
}

function loadDirect(collector, url = "https://collector.school.test:50052", globals = {}) {
  return load({
    globals: { fetch: collector.fetch, AbortController, ...globals },
    extra: {
      storage: { managed: { get: async () => ({ collector_url: url }) } },
      api: {
        identity: { getProfileUserInfo: async () => ({ email: "amy@pupils.school.test" }) },
      },
    },
  });
}

// How many visits stored records stand for.
const lostIn = (records) => records.reduce((sum, r) => sum + (r.type === "gap" ? r.lost : 1), 0);

// Acknowledges every visit, giving lane 7 when asked.
function acceptAll(body) {
  if (body.lane === 0) return { status: 200, reply: { lane: 7, acked: [], rejected: [] } };
  return { status: 200, reply: { lane: body.lane, acked: body.visits.map((v) => v.id), rejected: [] } };
}

test("straight to the collector: a lane first, then numbered visits, acked by id", async () => {
  const collector = fakeCollector(acceptAll);
  const env = loadDirect(collector);
  try {
    await waitFor(() => env.store.lane === 7, "the lane");
    assert.equal(env.ports.length, 0, "no native host");
    const first = collector.uploads[0];
    assert.equal(first.url, "https://collector.school.test:50052/extension/v1/visits");
    assert.equal(first.credentials, "include", "the client certificate goes with it");
    assert.equal(first.body.lane, 0);
    assert.equal(first.body.hello.browser, "chromium");
    env.visit(1, "https://example.org/a");
    env.visit(2, "https://example.org/b");
    await waitFor(() => collector.uploads.some((u) => u.body.visits.length > 0), "an upload");
    await waitFor(() => env.pending().length === 0, "the acks to empty the queue");
    const sent = collector.uploads.flatMap((u) => u.body.visits);
    assert.deepEqual(sent.map((v) => v.n), [1, 2], "numbered from 1 in order");
    assert.ok(collector.uploads.every((u) => u.body.user === "amy@pupils.school.test"));
    assert.ok(collector.uploads.slice(1).every((u) => u.body.lane === 7));
    assert.equal(env.store.next_n, 3);
  } finally {
    env.close();
  }
});

test("straight to the collector: a refused upload is sent again, same numbers, nothing lost", async () => {
  let down = true;
  const collector = fakeCollector((body) => {
    if (body.lane === 0) return { status: 200, reply: { lane: 1, acked: [], rejected: [] } };
    if (down && body.visits.length > 0) return { status: 503, reply: { error: "storage error" } };
    return acceptAll(body);
  });
  const env = loadDirect(collector);
  try {
    await waitFor(() => env.store.lane === 1, "the lane");
    env.visit(1, "https://example.org/a");
    await waitFor(() => collector.uploads.filter((u) => u.body.visits.length).length >= 2, "retries");
    assert.equal(env.pending().length, 1, "kept while the collector refuses");
    assert.ok(env.warnings.some((w) => w.includes("storage error")), env.warnings.join("\n"));
    down = false;
    await waitFor(() => env.pending().length === 0, "the ack after the collector is back");
    const numbers = collector.uploads.flatMap((u) => u.body.visits.map((v) => v.n));
    assert.ok(numbers.length >= 3 && numbers.every((n) => n === 1), String(numbers));
  } finally {
    env.close();
  }
});

test("straight to the collector: a lane the collector does not know is replaced, numbers kept", async () => {
  const collector = fakeCollector((body) => {
    if (body.lane === 0) return { status: 200, reply: { lane: 9, acked: [], rejected: [] } };
    if (body.lane === 4) {
      return { status: 409, reply: { error: "lane 4 was not given to this device; ask for one (lane 0)" } };
    }
    return acceptAll(body);
  });
  const env = loadDirect(collector);
  env.store.lane = 4; // e.g. a collector restored from an older backup
  env.store.next_n = 12;
  try {
    env.visit(1, "https://example.org/a");
    await waitFor(() => env.pending().length === 0 && env.store.lane === 9, "a new lane and the ack");
    const last = collector.uploads.at(-1).body;
    assert.equal(last.lane, 9);
    assert.deepEqual(last.visits.map((v) => v.n), [12]);
  } finally {
    env.close();
  }
});

test("a collector_url that is not https://host[:port] is ignored: the agent's host is used", async () => {
  const collector = fakeCollector(acceptAll);
  const env = loadDirect(collector, "http://collector.school.test/upload");
  try {
    await connected(env);
    assert.equal(collector.uploads.length, 0);
    assert.ok(env.warnings.some((w) => w.includes("collector_url must be")), env.warnings.join("\n"));
  } finally {
    env.close();
  }
});

test("straight to the collector: visits a full queue drops become one numbered gap record", async () => {
  let down = true;
  const collector = fakeCollector((body) => {
    if (body.lane === 0) return { status: 200, reply: { lane: 2, acked: [], rejected: [] } };
    if (down && body.visits.length > 0) return { status: 503, reply: { error: "down" } };
    return acceptAll(body);
  });
  const env = loadDirect(collector, undefined, { INVIGILATOR_QUEUE_MAX: 3 });
  try {
    await waitFor(() => env.store.lane === 2, "the lane");
    for (let i = 1; i <= 6; i++) {
      env.visit(i, "https://example.org/" + i);
      await waitFor(() => env.pending().filter((r) => r.type !== "gap").length > 0 &&
        env.pending().some((r) => r.url === "https://example.org/" + i), "visit " + i);
    }
    const pending = env.pending();
    assert.ok(pending.length <= 3, JSON.stringify(pending));
    const gaps = pending.filter((r) => r.type === "gap");
    assert.equal(gaps.length, 1, "one record counts every loss");
    const visits = pending.filter((r) => r.type === "visit");
    assert.equal(gaps[0].lost + visits.length, 6, JSON.stringify(pending));
    assert.equal(env.store.dropped, 0, "nothing left to the hello's count");
    const numbers = pending.map((r) => r.n);
    assert.equal(new Set(numbers).size, numbers.length, "each number once");
    down = false;
    await waitFor(() => env.pending().length === 0, "everything acknowledged");
    // What the collector stored stands for every visit: those kept, and the count of the rest.
    const stored = collector.uploads.filter((u) => u.status === 200).flatMap((u) => u.body.visits);
    assert.equal(lostIn(stored), 6, JSON.stringify(stored));
    assert.deepEqual(stored.filter((r) => r.type === "gap").map((r) => r.n), [gaps[0].n]);
  } finally {
    env.close();
  }
});

test("straight to the collector: a record the reply leaves out is sent again on the next connection", async () => {
  let stage = 0; // 0: refuse visits, 1: answer for the first of several only, 2: accept
  const collector = fakeCollector((body) => {
    if (body.lane === 0) return { status: 200, reply: { lane: 5, acked: [], rejected: [] } };
    if (body.visits.length === 0) return acceptAll(body);
    if (stage === 0) return { status: 503, reply: { error: "busy" } };
    if (stage === 1 && body.visits.length > 1) {
      stage = 2;
      return { status: 200, reply: { lane: 5, acked: [body.visits[0].id], rejected: [] } };
    }
    return acceptAll(body);
  });
  const env = loadDirect(collector);
  try {
    await waitFor(() => env.store.lane === 5, "the lane");
    env.visit(1, "https://example.org/a");
    env.visit(2, "https://example.org/b");
    await waitFor(() => env.pending().length === 2, "both queued");
    stage = 1;
    await waitFor(() => env.pending().length === 0, "both stored in the end");
    assert.equal(stage, 2, "an upload was answered in part");
    assert.ok(env.warnings.some((w) => w.includes("only part")), env.warnings.join("\n"));
    const sentAfter = collector.uploads
      .filter((u) => u.status === 200)
      .flatMap((u) => u.body.visits)
      .filter((v) => v.url === "https://example.org/b");
    assert.ok(sentAfter.length >= 2, "sent in the partial upload, then again: " + sentAfter.length);
  } finally {
    env.close();
  }
});
