// The ops page: polls GET /v1/queue (admin) every second and draws what it sees.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "genqueue.admin-token";
const HISTORY_SECONDS = 300;
const samples = []; // {t, waiting, rate}
let previous = null;

$("token").value = localStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("change", () => localStorage.setItem(TOKEN_KEY, $("token").value.trim()));

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
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

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (samples.length < 2) return;
  // From the first sample (at most HISTORY_SECONDS ago) to now, at least 30 s wide.
  const last = samples[samples.length - 1].t;
  const span = Math.max(30, last - samples[0].t);
  const x = (t) => ((t - (last - span)) / span) * canvas.width;
  for (const [key, color] of [["waiting", "#2f5bea"], ["rate", "#067647"]]) {
    const top = Math.max(1, ...samples.map((s) => s[key]));
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => {
      const y = canvas.height - 4 - (s[key] / top) * (canvas.height - 8);
      if (i === 0) ctx.moveTo(x(s.t), y); else ctx.lineTo(x(s.t), y);
    });
    ctx.stroke();
  }
}

function show(q) {
  const now = Date.now() / 1000;
  const done = q.succeeded + q.failed + q.cancelled;
  const rate = previous ? Math.max(0, (done - previous.done) / Math.max(0.001, now - previous.t)) : 0;
  previous = { t: now, done };
  samples.push({ t: now, waiting: q.waiting, rate });
  while (samples.length && samples[0].t < now - HISTORY_SECONDS) samples.shift();
  for (const key of ["waiting", "running", "slots", "succeeded", "failed"]) $(key).textContent = q[key];
  $("throughput").textContent = rate.toFixed(1);
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
  draw();
}

async function tick() {
  const token = $("token").value.trim();
  if (token) {
    try {
      const r = await fetch("/v1/queue", { headers: { Authorization: "Bearer " + token } });
      const body = await r.json();
      if (r.ok) {
        $("error").textContent = "";
        show(body);
      } else {
        $("error").textContent = r.status === 403 ? "This page needs an admin token." : (body.detail || "error " + r.status);
      }
    } catch (e) {
      $("error").textContent = "genqueue is not answering: " + e.message;
    }
  }
  setTimeout(tick, 1000);
}
tick();
