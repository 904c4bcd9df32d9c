// The ops page: polls GET /v1/queue (admin) every second and draws what it sees; lists tasks
// (GET /v1/tasks) with filters and pages, shows a task's timeline, and acts: cancel, retry,
// pause and resume intake. Everything is built with DOM calls: the page's policy allows no
// inline script or style.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "genqueue.admin-token";
const HISTORY_SECONDS = 300;
const PAGE_SIZE = 20;
const samples = []; // {t, waiting, rate}
let previous = null;
// The task table: the cursor of the page shown, those of the pages before it, and the next one.
const pages = { cursor: null, before: [], next: null, status: "", user: "" };
let selected = null; // the task whose timeline is shown

$("token").value = localStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("change", () => {
  localStorage.setItem(TOKEN_KEY, $("token").value.trim());
  loadTasks();
});

// ---- the API --------------------------------------------------------------------------------

function token() {
  return $("token").value.trim();
}

// {ok, status, body} of a call; a network failure is shown and thrown.
async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token(), ...(options.body ? { "Content-Type": "application/json" } : {}) };
  let r;
  try {
    r = await fetch(path, { ...options, headers });
  } catch (e) {
    $("error").textContent = "genqueue is not answering: " + e.message;
    throw e;
  }
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) $("error").textContent = "The token is not valid.";
  else if (r.status === 403 && path === "/v1/queue") $("error").textContent = "This page needs an admin token.";
  return { ok: r.ok, status: r.status, body };
}

// ---- small helpers --------------------------------------------------------------------------

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "–" : String(text);
  row.appendChild(td);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((values) => {
    const tr = document.createElement("tr");
    values.forEach((v) => cell(tr, v));
    return tr;
  }));
}

function time(at) {
  return new Date(at * 1000).toLocaleTimeString();
}

function seconds(s) {
  return s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`;
}

const show = (id, on) => $(id).classList.toggle("hidden", !on);

// ---- charts: axes, ticks and the latest value -----------------------------------------------

// A round top for a value axis: 1, 2 or 5 times a power of ten, at least `value`.
function niceTop(value) {
  const top = Math.max(1, value);
  const power = 10 ** Math.floor(Math.log10(top));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= top);
}

function drawChart(canvas, key, color, digits) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  const left = 52, right = 12, top = 10, bottom = 24;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px system-ui, sans-serif";
  const last = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  const span = Math.max(30, samples.length ? last - samples[0].t : 30);
  const x = (t) => left + ((t - (last - span)) / span) * (W - left - right);
  const yTop = niceTop(Math.max(0, ...samples.map((s) => s[key])));
  const y = (v) => H - bottom - (v / yTop) * (H - top - bottom);
  // The value axis: 0, half and the top, with grid lines.
  ctx.fillStyle = "#667085";
  ctx.strokeStyle = "#eaecf0";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of [0, yTop / 2, yTop]) {
    ctx.beginPath();
    ctx.moveTo(left, y(v));
    ctx.lineTo(W - right, y(v));
    ctx.stroke();
    ctx.fillText(v.toFixed(v % 1 ? 1 : 0), left - 6, y(v));
  }
  // The time axis: seconds before now.
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const step = span > 120 ? 60 : span > 50 ? 20 : 10;
  for (let ago = 0; ago <= span; ago += step) {
    ctx.fillText(ago === 0 ? "now" : `−${seconds(ago)}`, x(last - ago), H - bottom + 6);
  }
  ctx.strokeStyle = "#98a2b3";
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, H - bottom);
  ctx.lineTo(W - right, H - bottom);
  ctx.stroke();
  if (samples.length < 2) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  samples.forEach((s, i) => {
    if (i === 0) ctx.moveTo(x(s.t), y(s[key])); else ctx.lineTo(x(s.t), y(s[key]));
  });
  ctx.stroke();
  const now = samples[samples.length - 1][key];
  ctx.fillStyle = color;
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.fillText(now.toFixed(digits), W - right, Math.max(top + 14, y(now) - 4));
}

// ---- the queue ------------------------------------------------------------------------------

function showIntake(intake) {
  if (!intake) return;
  if (intake.paused) {
    const why = intake.reason ? `: ${intake.reason}` : "";
    const by = intake.by ? ` by ${intake.by}` : "";
    $("intake").textContent = `Paused since ${time(intake.since)}${by}${why}. New submits get a 503 ` +
      `(try again in ${intake.retry_after_seconds} s) and are not charged; queued tasks keep running.`;
  } else {
    $("intake").textContent = "Open: new tasks are accepted.";
  }
  $("intake").className = intake.paused ? "error" : "ok";
  show("pause", !intake.paused);
  show("pause-reason", !intake.paused);
  show("resume", intake.paused);
}

function showQueue(q) {
  const now = Date.now() / 1000;
  const done = q.succeeded + q.failed + q.cancelled + (q.expired || 0);
  const rate = previous ? Math.max(0, (done - previous.done) / Math.max(0.001, now - previous.t)) : 0;
  previous = { t: now, done };
  samples.push({ t: now, waiting: q.waiting, rate });
  while (samples.length && samples[0].t < now - HISTORY_SECONDS) samples.shift();
  for (const key of ["waiting", "starting", "running", "slots", "succeeded", "failed", "expired"]) {
    $(key).textContent = q[key] == null ? "–" : q[key];
  }
  $("throughput").textContent = rate.toFixed(1);
  const wait = q.wait_seconds || {};
  $("wait").textContent = wait.p50 == null ? "–" : `${wait.p50.toFixed(1)} / ${wait.p90.toFixed(1)} s`;
  // Nothing can start: every pool's window is spent (the slots are not what holds tasks back).
  const holding = q.waiting + (q.starting || 0);
  const spent = q.quota_until && holding > 0;
  show("spent", spent);
  if (spent) {
    $("spent").textContent = `Pools spent until ${time(q.quota_until)} (in ${seconds(q.quota_until - now)}): ` +
      `no task can start before then; ${holding} waiting for it.`;
  }
  const blocked = Object.entries(q.blocked || {});
  show("blocked", blocked.length > 0);
  $("blocked").textContent = blocked.map(([kind, b]) =>
    `No pool can serve ${kind}: ${b.reason}` + (b.until ? ` (until ${time(b.until)})` : "")).join(" · ");
  showIntake(q.intake);
  drawChart($("chart-waiting"), "waiting", "#2f5bea", 0);
  drawChart($("chart-done"), "rate", "#067647", 1);
  $("chart-waiting-now").textContent = q.waiting;
  $("chart-done-now").textContent = rate.toFixed(1);
  fill($("pools").tBodies[0], q.pools.map((p) => [
    p.name, p.state, `${p.window_left}/${p.capacity}`, `${p.learned_rpm} / ${p.rpm} rpm`,
    p.cooldown_seconds ? `${p.cooldown_seconds.toFixed(1)} s` : "–",
    p.parked_until ? time(p.parked_until) : "–",
    p.disabled_keys.length ? p.disabled_keys.join(", ") : "–",
    p.calls_today, p.throttled,
  ]));
  $("alerts").replaceChildren(...(q.alerts.length ? q.alerts : [null]).map((a) => {
    const li = document.createElement("li");
    li.textContent = a ? `${a.name}: ${a.detail} (since ${time(a.since)})` : "none";
    if (a) li.className = "error";
    return li;
  }));
  fill($("failures").tBodies[0], (q.recent_failures || []).map((f) => [time(f.at), f.task_id.slice(0, 8), f.kind, f.error]));
}

async function tick() {
  if (token()) {
    try {
      const r = await api("/v1/queue");
      if (r.ok) {
        $("error").textContent = "";
        showQueue(r.body);
      } else if (r.status !== 401 && r.status !== 403) {
        $("error").textContent = r.body.detail || "error " + r.status;
      }
    } catch (e) { /* shown by api() */ }
  }
  setTimeout(tick, 1000);
}

// ---- intake ---------------------------------------------------------------------------------

async function setIntake(path, body) {
  const r = await api(path, { method: "POST", ...(body ? { body: JSON.stringify(body) } : {}) });
  if (r.ok) showIntake(r.body);
  else $("error").textContent = r.body.detail || "error " + r.status;
}

$("pause").addEventListener("click", () => setIntake("/v1/admin/intake/pause", { reason: $("pause-reason").value.trim() }));
$("resume").addEventListener("click", () => setIntake("/v1/admin/intake/resume"));

// ---- the task table -------------------------------------------------------------------------

function statusText(t) {
  return t.stage ? `${t.status} (${t.stage.replaceAll("_", " ")})` : t.status;
}

async function loadTasks() {
  if (!token()) return;
  const params = new URLSearchParams({ limit: PAGE_SIZE });
  if (pages.status) params.set("status", pages.status);
  if (pages.user) params.set("user_id", pages.user);
  if (pages.cursor) params.set("cursor", pages.cursor);
  const r = await api("/v1/tasks?" + params);
  if (!r.ok) {
    $("page").textContent = r.body.detail || "error " + r.status;
    return;
  }
  pages.next = r.body.next_cursor;
  $("tasks").tBodies[0].replaceChildren(...r.body.tasks.map((t) => {
    const tr = document.createElement("tr");
    tr.className = "ops-task" + (t.task_id === selected ? " ops-selected" : "");
    tr.dataset.task = t.task_id;
    [time(t.submitted_at), t.task_id.slice(0, 8), t.user_id, t.kind, statusText(t), t.attempts, t.error || ""]
      .forEach((v) => cell(tr, v));
    tr.addEventListener("click", () => openTimeline(t.task_id));
    return tr;
  }));
  const n = pages.before.length + 1;
  $("page").textContent = r.body.tasks.length ? `page ${n}` : (n > 1 ? `page ${n}: no more tasks` : "no tasks");
  $("next").disabled = !pages.next;
  $("newest").disabled = !pages.cursor;
}

function filterTasks() {
  Object.assign(pages, { cursor: null, before: [], next: null });
  pages.status = $("filter-status").value;
  pages.user = $("filter-user").value.trim();
  loadTasks();
}

$("filter").addEventListener("click", filterTasks);
$("filter-status").addEventListener("change", filterTasks);
$("filter-user").addEventListener("keydown", (e) => { if (e.key === "Enter") filterTasks(); });
$("newest").addEventListener("click", () => {
  Object.assign(pages, { cursor: null, before: [] });
  loadTasks();
});
$("next").addEventListener("click", () => {
  if (!pages.next) return;
  pages.before.push(pages.cursor);
  pages.cursor = pages.next;
  loadTasks();
});

// ---- a task's timeline and the actions on it ------------------------------------------------

// The fields of an event worth a line: everything but what the table already shows.
const QUIET = new Set(["task_id", "user_id", "at", "inputs", "prompt", "digest", "options", "token_id", "order"]);

function detail(data) {
  return Object.entries(data)
    .filter(([k, v]) => !QUIET.has(k) && v !== "" && v != null)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}

async function openTimeline(taskId) {
  selected = taskId;
  $("action").textContent = "";
  for (const tr of $("tasks").tBodies[0].rows) tr.classList.toggle("ops-selected", tr.dataset.task === taskId);
  await drawTimeline();
  $("timeline-box").scrollIntoView({ block: "nearest" });
}

async function drawTimeline() {
  const taskId = selected;
  const [view, trail] = await Promise.all([api(`/v1/tasks/${taskId}`), api(`/v1/tasks/${taskId}/events`)]);
  if (taskId !== selected) return; // another task was chosen meanwhile
  show("timeline-box", true);
  $("timeline-task").textContent = taskId;
  if (!view.ok || !trail.ok) {
    $("timeline-status").textContent = (view.ok ? trail : view).body.detail || "not found";
    $("timeline").tBodies[0].replaceChildren();
    return;
  }
  const t = view.body;
  const error = t.error ? ` · ${t.error}` : "";
  $("timeline-status").textContent = `${statusText(t)} · ${t.user_id} · ${t.kind} · attempts ${t.attempts}${error}`;
  const start = t.submitted_at;
  fill($("timeline").tBodies[0], trail.body.events.map((e) => [
    `+${(e.data.at - start).toFixed(2)} s`, e.type, detail(e.data),
  ]));
  const cancellable = t.status === "queued" && (!t.stage || t.stage === "waiting" || t.stage === "blocked");
  show("cancel", cancellable);
  show("retry", t.status === "failed");
}

$("cancel").addEventListener("click", async () => {
  const r = await api(`/v1/tasks/${selected}`, { method: "DELETE" });
  $("action").textContent = r.ok ? `Cancelled; ${r.body.refunded} credit(s) refunded.` : r.body.detail;
  await Promise.all([drawTimeline(), loadTasks()]);
});

$("retry").addEventListener("click", async () => {
  const failed = selected;
  const r = await api(`/v1/admin/tasks/${failed}/retry`, { method: "POST" });
  if (!r.ok) {
    $("action").textContent = r.body.detail || "error " + r.status;
    return;
  }
  await loadTasks();
  await openTimeline(r.body.task_id);
  $("action").textContent = `A retry of ${failed.slice(0, 8)}, charged to its user.`;
});

tick();
loadTasks();
setInterval(loadTasks, 5000);
