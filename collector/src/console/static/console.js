// Live updates for the alerts page. New rows are built with textContent only: alert fields come
// from monitored devices (host names, user names, page titles) and must never become markup.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const body = document.getElementById("alerts-body");
  if (!body || !window.EventSource) return;
  const after = body.dataset.after || "0";
  const filters = body.dataset.filters || "";
  const counter = document.getElementById("live-count");
  let fresh = 0;
  const source = new EventSource("/api/alerts/stream?after=" + encodeURIComponent(after) + filters);
  source.addEventListener("alert", (e) => {
    let a;
    try { a = JSON.parse(e.data); } catch { return; }
    const tr = document.createElement("tr");
    tr.className = "fresh";
    tr.dataset.id = String(a.id);
    const cell = (text, cls) => {
      const td = document.createElement("td");
      td.textContent = text == null ? "" : String(text);
      if (cls) td.className = cls;
      tr.appendChild(td);
      return td;
    };
    cell("");
    const link = document.createElement("a");
    link.href = "/alerts/" + encodeURIComponent(a.id);
    link.textContent = "#" + a.id;
    cell("").appendChild(link);
    cell(a.observed_at);
    cell(a.severity, "sev sev-" + String(a.severity).replace(/[^a-z]/g, ""));
    cell(a.category);
    cell(a.summary);
    cell(a.user);
    cell(a.hostname);
    cell(a.group);
    cell(a.count);
    cell(a.status);
    body.insertBefore(tr, body.firstChild);
    fresh += 1;
    if (counter) counter.textContent = fresh + " new since this page was opened";
  });
});
