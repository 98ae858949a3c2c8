// The notice popup: shows a technician that the extension is working.
// No inline script (MV3's content security policy forbids it), no remote
// resources; reads only what background.js keeps in storage.local.
"use strict";

(() => {
  const api = globalThis.browser ?? globalThis.chrome;

  function show(id, text) {
    const el = document.getElementById(id);
    if (el) el.textContent = text;
  }

  async function refresh() {
    try {
      const got = await api.storage.local.get(["pending", "dropped", "agent"]);
      const pending = Array.isArray(got.pending) ? got.pending.length : 0;
      show("pending", String(pending));
      show("dropped", String(Number.isFinite(got.dropped) ? got.dropped : 0));
      const agent = got.agent;
      if (!agent) {
        show("agent", "not contacted yet");
      } else if (agent.connected) {
        show("agent", "connected (since " + new Date(agent.at).toLocaleString() + ")");
      } else {
        show("agent", "not connected" + (agent.error ? ": " + agent.error : "") +
          " (" + new Date(agent.at).toLocaleString() + ")");
      }
    } catch (err) {
      show("pending", "unknown (" + err + ")");
    }
    try {
      const m = api.runtime.getManifest();
      show("version", m.version + " (" + api.runtime.id + ")");
    } catch (_) {
      // not shown
    }
  }

  refresh();
  setInterval(refresh, 2000);
})();
