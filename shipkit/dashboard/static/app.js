// shipkit dashboard: plain JS, no framework. One EventSource (/api/live) pushes the overview and
// new events; the job list and job page are fetched from the JSON API when their data changed.
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const STATES = ["scheduled", "queued", "running", "complete", "failed", "cancelled", "dead"];
const PAGE = 25;
const ui = { overview: null, queue: "", version: -1, offset: 0, state: "", worker: "", text: "",
  paused: false, events: [], openJob: null, openVersion: -1, jobsInFlight: false, jobsAgain: false };

function fmtNum(n) { return n == null ? "–" : Number(n).toLocaleString(); }
function fmtBytes(n) { const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return `${n.toFixed(i ? 1 : 0)} ${u[i]}`; }
function fmtNs(ns) { if (ns == null) return "–"; if (ns < 1e3) return `${ns} ns`; if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`; if (ns < 1e9) return `${(ns / 1e6).toFixed(1)} ms`; return `${(ns / 1e9).toFixed(2)} s`; }
function fmtAge(s) { if (s == null) return "–"; s = Math.max(0, s); if (s < 60) return `${Math.round(s)}s`; if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`; if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`; return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`; }
function ageMs(ms) { return ms == null ? null : (Date.now() - ms) / 1000; }
function badge(text, cls) { return `<span class="badge ${esc(cls || text)}">${esc(text)}</span>`; }
function show(el, on) { el.hidden = !on; }

async function api(path, options) {
  const res = await fetch(path, { credentials: "same-origin", ...options });
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

// -- services, fleet, streams ------------------------------------------------------------
function renderServices(services) {
  $("services-count").textContent = services.length || "";
  show($("services-empty"), services.length === 0);
  $("services-body").innerHTML = services.map((s) => {
    const head = `<tr data-service="${esc(s.name)}"><td><b>${esc(s.name)}</b></td><td>${s.live}/${s.instances.length} live</td><td>${esc(s.versions.join(", "))}</td>` +
      `<td class="num" data-testid="service-requests">${fmtNum(s.requests)}</td><td class="num">${s.errors ? `<span class="badge error">${fmtNum(s.errors)}</span>` : "0"}</td><td></td><td></td><td></td></tr>`;
    const rows = s.instances.map((i) => {
      const avg = i.endpoints.length ? Math.round(i.endpoints.reduce((a, e) => a + e.avg_latency_ns * e.requests, 0) / Math.max(1, i.requests)) : null;
      const recent = i.endpoints.map((e) => e.recent_latency_ns).filter((v) => v != null);
      return `<tr class="sub"><td>${esc(i.id)} ${i.stale ? badge("stale") : badge("live", "ok")}</td><td>${esc(i.endpoints.map((e) => e.name).join(", "))}</td><td>${esc(i.version)}</td>` +
        `<td class="num">${fmtNum(i.requests)}</td><td class="num">${fmtNum(i.errors)}</td><td class="num">${fmtNs(avg)}</td><td class="num">${recent.length ? fmtNs(Math.max(...recent)) : "–"}</td><td>${fmtAge(i.uptime_s)}</td></tr>`;
    }).join("");
    return head + rows;
  }).join("");
}

function renderFleet(beings, agents) {
  $("beings-count").textContent = beings.length || "";
  show($("beings-empty"), beings.length === 0);
  $("beings-body").innerHTML = beings.map((b) => `<tr><td><b>${esc(b.id)}</b> ${b.online ? badge("online") : badge("offline")}</td><td>${badge(b.state)}</td><td>${esc(b.current_task || "–")}</td><td>${fmtAge(b.heartbeat_age_s)} ago</td></tr>`).join("");
  $("agents-count").textContent = agents.length || "";
  show($("agents-empty"), agents.length === 0);
  $("agents-body").innerHTML = agents.map((a) => `<tr><td><b>${esc(a.agent)}</b> ${a.online ? badge("online") : badge("offline")}</td><td>${esc(a.owner)}</td><td>${esc(a.session || "–")}</td><td>${fmtAge(a.heartbeat_age_s)} ago</td></tr>`).join("");
}

function renderStreams(streams) {
  $("streams-count").textContent = streams.length || "";
  $("streams-body").innerHTML = streams.map((s) => {
    const kind = s.kind === "stream" ? "stream" : `${s.kind} bucket`;
    const head = `<tr><td><b>${esc(s.name)}</b></td><td class="muted">${esc(kind)}</td><td class="num">${fmtNum(s.messages)}</td><td class="num">${fmtBytes(s.bytes)}</td><td class="num">${s.replicas}</td><td>${esc(s.leader || "–")}</td><td></td><td></td><td></td></tr>`;
    const consumers = s.consumers.map((c) => `<tr class="sub"><td>↳ ${esc(c.name)}</td><td>${c.durable ? "durable" : "ephemeral"}</td><td colspan="4" class="mono">${esc(c.filter)}</td>` +
      `<td class="num ${c.behind ? "behind" : ""}" data-testid="consumer-pending">${fmtNum(c.pending)}</td><td class="num">${fmtNum(c.ack_pending)}</td><td class="num ${c.redelivered ? "behind" : ""}">${fmtNum(c.redelivered)}</td></tr>`).join("");
    return head + consumers;
  }).join("");
}

function renderProblems(problems) {
  const entries = Object.entries(problems || {});
  show($("problems"), entries.length > 0);
  $("problems").innerHTML = entries.map(([k, v]) => `<div><b>${esc(k)}</b>: ${esc(v)}</div>`).join("");
}

// -- jobs --------------------------------------------------------------------------------
function spark(points) {
  const svg = $("spark");
  if (!points.length) { svg.innerHTML = ""; $("spark-label").textContent = ""; return; }
  const max = Math.max(1, ...points);
  const step = 120 / Math.max(1, points.length - 1);
  svg.innerHTML = `<polyline points="${points.map((p, i) => `${(i * step).toFixed(1)},${(23 - (p / max) * 21).toFixed(1)}`).join(" ")}"/>`;
  $("spark-label").textContent = `${points[points.length - 1].toFixed(1)} jobs/s finished`;
}

function renderQueues(queues) {
  const select = $("queue-select");
  const names = queues.map((q) => q.name);
  if (select.dataset.names !== names.join(",")) {
    select.dataset.names = names.join(",");
    select.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
    if (!names.includes(ui.queue)) ui.queue = names[0] || "";
    select.value = ui.queue;
  }
  show($("jobs-empty"), names.length === 0);
  const q = queues.find((x) => x.name === ui.queue);
  if (!q) { $("counts").innerHTML = ""; $("jobs-body").innerHTML = ""; return; }
  $("counts").innerHTML = STATES.map((s) => `<div class="count ${ui.state === s ? "active" : ""}" data-state="${s}" data-testid="count-${s}"><b>${fmtNum(q.counts[s])}</b><span>${s}</span></div>`).join("");
  spark(q.throughput);
  const workers = $("f-worker");
  if (workers.dataset.names !== q.workers.join(",")) {
    workers.dataset.names = q.workers.join(",");
    workers.innerHTML = `<option value="">any worker</option>` + q.workers.map((w) => `<option>${esc(w)}</option>`).join("");
    workers.value = ui.worker;
  }
  if (q.version !== ui.version) { ui.version = q.version; loadJobs(); }
  if (ui.openJob && ui.openJob.queue === q.name && q.version !== ui.openVersion) { ui.openVersion = q.version; loadJob(); }
}

function progressBar(j) {
  const frac = j.state === "complete" ? 1 : (j.progress ?? 0);
  const pct = Math.round(frac * 100);
  return `<div class="bar ${esc(j.state)}" data-testid="progress" data-progress="${pct}"><i style="width:${pct}%"></i></div><span class="bar-label">${pct}%${j.progress_message ? " · " + esc(j.progress_message) : ""}</span>`;
}

function jobButtons(j) {
  if (!ui.overview?.actions) return "";
  const b = [];
  if (!["complete", "failed", "cancelled", "dead"].includes(j.state)) b.push(`<button class="danger" data-act="cancel" data-job="${esc(j.id)}" data-testid="cancel-${esc(j.id)}">Cancel</button>`);
  if (["failed", "cancelled", "dead"].includes(j.state)) b.push(`<button data-act="retry" data-job="${esc(j.id)}" data-testid="retry-${esc(j.id)}">Retry</button>`);
  if (["complete", "failed", "cancelled", "dead"].includes(j.state)) b.push(`<button data-act="purge" data-job="${esc(j.id)}" data-testid="purge-${esc(j.id)}">Purge</button>`);
  return b.join(" ");
}

// Replace only the rows that changed, so a button under the pointer is not swapped mid-click.
const rowHtml = new WeakMap();
function patchRows(body, rows) {
  const current = Array.from(body.children);
  if (current.length !== rows.length || current.some((tr, i) => tr.dataset.jobRow !== rows[i][0])) {
    body.innerHTML = rows.map((r) => r[1]).join("");
    Array.from(body.children).forEach((tr, i) => rowHtml.set(tr, rows[i][1]));
    return;
  }
  current.forEach((tr, i) => {
    if (rowHtml.get(tr) === rows[i][1]) return;
    const fresh = document.createElement("tbody");
    fresh.innerHTML = rows[i][1];
    const replacement = fresh.firstElementChild;
    rowHtml.set(replacement, rows[i][1]);
    tr.replaceWith(replacement);
  });
}

async function loadJobs() {
  if (!ui.queue) return;
  if (ui.jobsInFlight) { ui.jobsAgain = true; return; }
  ui.jobsInFlight = true;
  try {
    const params = new URLSearchParams({ offset: ui.offset, limit: PAGE, state: ui.state, worker: ui.worker, q: ui.text });
    const page = await api(`api/queues/${encodeURIComponent(ui.queue)}/jobs?${params}`);
    const anyPrio = page.items.some((j) => j.priority != null);
    $("prio-head").style.display = anyPrio ? "" : "none";
    $("jobs-total").textContent = `${fmtNum(page.total)} matching`;
    $("page-label").textContent = page.total ? `${page.offset + 1}–${Math.min(page.total, page.offset + page.items.length)}` : "";
    $("prev").disabled = page.offset === 0;
    $("next").disabled = page.offset + page.items.length >= page.total;
    const rows = page.items.map((j) => [j.id, `<tr class="clickable" data-job-row="${esc(j.id)}" data-testid="job-${esc(j.id)}">` +
      `<td class="mono">${esc(j.id)}</td><td data-testid="state">${badge(j.state)}${j.cancel_requested && j.state === "running" ? " " + badge("cancelling", "warn") : ""}</td><td>${esc(j.worker)}</td>` +
      `<td class="wide">${progressBar(j)}</td><td class="num">${j.attempt}/${j.max_attempts ?? "–"}</td>` +
      `<td class="num" style="${anyPrio ? "" : "display:none"}">${esc(j.priority ?? "")}</td><td>${fmtAge(ageMs(j.queued_at))}</td>` +
      `<td class="wide muted" title="${esc(j.error || j.payload)}">${esc(j.error || j.payload)}</td><td>${jobButtons(j)}</td></tr>`]);
    patchRows($("jobs-body"), rows);
  } catch (err) {
    $("jobs-total").textContent = `list failed: ${err.message}`;
  } finally {
    ui.jobsInFlight = false;
    if (ui.jobsAgain) { ui.jobsAgain = false; loadJobs(); }
  }
}

async function act(action, jobId) {
  if (!window.confirm(`${action} job ${jobId}?`)) return;
  const out = $("jp-outcome");
  try {
    const res = await api(`api/queues/${encodeURIComponent(ui.queue)}/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
    report(res.message, true);
  } catch (err) {
    report(`${action} ${jobId} failed: ${err.message}`, false);
  }
  loadJobs();
  if (ui.openJob) loadJob();
  return out;
}

function report(message, ok) {
  const out = ui.openJob ? $("jp-outcome") : $("jobs-total");
  out.textContent = message;
  out.className = ui.openJob ? `outcome ${ok ? "ok" : "bad"}` : "muted";
  const toast = $("toast") || Object.assign(document.body.appendChild(document.createElement("div")), { id: "toast" });
  toast.dataset.testid = "toast";
  toast.setAttribute("data-testid", "toast");
  toast.className = `toast badge ${ok ? "ok" : "error"}`;
  toast.style.cssText = "position:fixed;right:20px;bottom:20px;padding:8px 14px;z-index:20";
  toast.textContent = message;
}

async function openJob(jobId) {
  ui.openJob = { queue: ui.queue, id: jobId };
  ui.openVersion = ui.version;
  $("jp-outcome").textContent = "";
  show($("job-panel"), true);
  await loadJob();
}

const pretty = (v) => esc(typeof v === "string" ? v : JSON.stringify(v, null, 2));

async function loadJob() {
  const { queue, id } = ui.openJob;
  try {
    const data = await api(`api/queues/${encodeURIComponent(queue)}/jobs/${encodeURIComponent(id)}`);
    const r = data.record;
    $("jp-title").innerHTML = `${esc(r.id)} ${badge(r.state)}`;
    $("jp-actions").innerHTML = jobButtons(r);
    const when = (ms) => (ms ? new Date(ms).toLocaleString() : "–");
    const rows = [["worker", r.worker], ["queued by", r.queued_by || "–"], ["queued", when(r.queued_at)], ["started", when(r.started_at)],
      ["finished", when(r.completed_at)], ["attempt", `${r.attempt}/${r.max_attempts ?? "–"}`], ["claimed by", r.claimed_by || "–"]];
    if (r.priority != null) rows.push(["priority", r.priority]);
    let html = `<div style="margin:8px 0">${progressBar(r)}</div><dl>${rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>`;
    html += `<h3>Payload</h3><pre data-testid="jp-payload">${pretty(r.payload)}</pre>`;
    if (r.result != null || r.result_ref) html += `<h3>Result</h3><pre>${pretty(r.result_ref ? { stored_as: r.result_ref } : r.result)}</pre>`;
    if (r.error) html += `<h3>Error</h3><pre>${esc(r.error)}</pre>`;
    if (r.last_error && r.last_error !== r.error) html += `<h3>Last attempt's error</h3><pre>${esc(r.last_error)}</pre>`;
    if (r.last_traceback) html += `<h3>Traceback <span class="muted">(last frames)</span></h3><pre data-testid="jp-traceback">${esc(r.last_traceback)}</pre>`;
    for (const key of ["checkpoints", "checkpoint", "attempts", "history"]) if (r[key] != null) html += `<h3>${esc(key)}</h3><pre>${pretty(r[key])}</pre>`;
    html += `<h3>Events <span class="muted">(seen since the dashboard started)</span></h3>`;
    html += data.events.length ? `<ol class="events">${data.events.map((e) => `<li><span class="subj">${esc(e.event_type)}</span> <span class="muted">${esc(e.timestamp)}</span></li>`).join("")}</ol>` : `<p class="empty">none seen</p>`;
    $("jp-body").innerHTML = html;
  } catch (err) {
    $("jp-body").innerHTML = `<p class="outcome bad">${esc(err.message)}</p>`;
  }
}

// -- events ------------------------------------------------------------------------------
function renderEvents() {
  const filter = $("ev-filter").value.trim();
  const shown = ui.events.filter((e) => !filter || e.subject.includes(filter)).slice(-200).reverse();
  $("events-count").textContent = ui.events.length || "";
  $("events-list").innerHTML = shown.map((e) => {
    const body = e.event;
    const type = body && typeof body === "object" ? body.event_type || "" : "";
    return `<li data-testid="event"><details><summary><span class="subj">${esc(e.subject)}</span><span>${esc(type)}</span><span class="muted">${new Date(e.received_at * 1000).toLocaleTimeString()}</span></summary><pre>${pretty(body)}</pre></details></li>`;
  }).join("");
}

function addEvents(batch) {
  if (ui.paused) { ui.held = (ui.held || 0) + batch.length; $("ev-paused").textContent = `paused, ${ui.held} new`; ui.buffer = (ui.buffer || []).concat(batch); return; }
  ui.events = ui.events.concat(batch).slice(-500);
  renderEvents();
}

// -- live feed and controls -------------------------------------------------------------
function connect(after) {
  const source = new EventSource(`api/live?after=${after}`);
  source.addEventListener("open", () => { $("live-dot").className = "dot on"; $("live-text").textContent = "live"; });
  source.addEventListener("error", () => { $("live-dot").className = "dot off"; $("live-text").textContent = "reconnecting…"; });
  source.addEventListener("overview", (msg) => {
    const o = JSON.parse(msg.data);
    ui.overview = o;
    renderServices(o.services); renderFleet(o.beings, o.agents); renderStreams(o.streams); renderQueues(o.queues); renderProblems(o.problems);
    $("live-text").textContent = `live · ${new Date(o.refreshed_at * 1000).toLocaleTimeString()}`;
  });
  source.addEventListener("events", (msg) => addEvents(JSON.parse(msg.data)));
}

function wire() {
  $("f-state").innerHTML += STATES.map((s) => `<option>${s}</option>`).join("");
  const refilter = () => { ui.offset = 0; loadJobs(); if (ui.overview) renderQueues(ui.overview.queues); };
  $("f-state").addEventListener("change", (e) => { ui.state = e.target.value; refilter(); });
  $("f-worker").addEventListener("change", (e) => { ui.worker = e.target.value; refilter(); });
  let typing;
  $("f-text").addEventListener("input", (e) => { clearTimeout(typing); typing = setTimeout(() => { ui.text = e.target.value; refilter(); }, 250); });
  $("queue-select").addEventListener("change", (e) => { ui.queue = e.target.value; ui.version = -1; refilter(); });
  $("counts").addEventListener("click", (e) => { const c = e.target.closest(".count"); if (!c) return; ui.state = ui.state === c.dataset.state ? "" : c.dataset.state; $("f-state").value = ui.state; refilter(); });
  $("prev").addEventListener("click", () => { ui.offset = Math.max(0, ui.offset - PAGE); loadJobs(); });
  $("next").addEventListener("click", () => { ui.offset += PAGE; loadJobs(); });
  document.body.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-act]");
    if (button) { e.stopPropagation(); act(button.dataset.act, button.dataset.job); return; }
    const row = e.target.closest("tr[data-job-row]");
    if (row) openJob(row.dataset.jobRow);
  });
  $("jp-close").addEventListener("click", () => { ui.openJob = null; show($("job-panel"), false); });
  $("job-panel").addEventListener("click", (e) => { if (e.target.id === "job-panel") { ui.openJob = null; show($("job-panel"), false); } });
  $("ev-filter").addEventListener("input", renderEvents);
  $("ev-pause").addEventListener("click", () => {
    ui.paused = !ui.paused;
    $("ev-pause").textContent = ui.paused ? "Resume" : "Pause";
    if (!ui.paused) { const held = ui.buffer || []; ui.buffer = []; ui.held = 0; $("ev-paused").textContent = ""; addEvents(held); }
    else $("ev-paused").textContent = "paused";
  });
  $("ev-clear").addEventListener("click", () => { ui.events = []; renderEvents(); });
}

wire();
api("api/events")
  .then((r) => { addEvents(r.events); connect(r.last_seq); })
  .catch((err) => { $("live-text").textContent = `cannot read the API: ${err.message}`; $("live-dot").className = "dot off"; });
