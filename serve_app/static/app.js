// The user page: submit a photo, follow the task over Server-Sent Events, show the image.
// EventSource cannot send an Authorization header, so the stream is read with fetch().
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "genqueue.token";
// Every position the stream showed, with when it arrived and when the page painted it.
window.genqueueLog = [];

$("token").value = localStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("change", () => localStorage.setItem(TOKEN_KEY, $("token").value.trim()));
$("kind").addEventListener("change", () => {
  $("garment-box").classList.toggle("hidden", $("kind").value !== "fitting");
});

function headers() {
  return { Authorization: "Bearer " + $("token").value.trim() };
}

function readFile(input) {
  return new Promise((resolve, reject) => {
    const file = input.files[0];
    if (!file) { reject(new Error("Please choose a photo.")); return; }
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result); // a data: URL; the API takes it as is
    reader.onerror = () => reject(new Error("That file could not be read."));
    reader.readAsDataURL(file);
  });
}

function ordinal(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

// Words a person understands for each problem the API can answer.
function explain(status, problem, retryAfter) {
  switch (status) {
    case 401: return "Your access token is not valid. Please check it and try again.";
    case 402: return `You are out of credits: you have ${problem.balance}, and this costs ${problem.price}.`;
    case 413: return "Those photos are too large to send. Please choose smaller ones.";
    case 422: return "That photo can't be used: " + (problem.detail || "please choose another one.");
    case 429: return `The queue is full right now. Please try again in ${retryAfter || problem.retry_after || "a few"} seconds.`;
    case 503: return "The service is busy starting up. Please try again in a moment.";
    default: return problem.detail || "Something went wrong. Please try again.";
  }
}

let countdown = null;
function showWaiting(view) {
  const ahead = view.position;
  let eta = view.eta_seconds;
  const place = ahead === 0 ? "You are next" : `You are ${ordinal(ahead + 1)} in line`;
  clearInterval(countdown);
  const paint = () => {
    $("status").textContent = eta == null ? place : `${place} — about ${Math.max(0, Math.round(eta))} s`;
  };
  paint();
  countdown = setInterval(() => { if (eta != null) { eta -= 1; paint(); } }, 1000);
}

async function showResult(taskId) {
  const r = await fetch(`/v1/tasks/${taskId}/result`, { headers: headers() });
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  $("result").src = url;
  $("download").href = url;
  $("result").classList.remove("hidden");
  $("download").classList.remove("hidden");
}

function render(view) {
  $("detail").textContent = "";
  if (view.status === "queued") {
    showWaiting(view);
  } else if (view.status === "running") {
    clearInterval(countdown);
    $("status").textContent = "Generating…";
  } else if (view.status === "succeeded") {
    clearInterval(countdown);
    $("status").textContent = "Here is your image";
    showResult(view.task_id);
  } else {
    clearInterval(countdown);
    $("status").textContent = view.status === "cancelled" ? "Cancelled" : "We could not make this image";
    $("detail").textContent = (view.error || "") + " Your credits were refunded.";
  }
}

function logged(view, arrived) {
  const entry = { position: view.position, status: view.status, arrived, painted: null };
  window.genqueueLog.push(entry);
  requestAnimationFrame(() => { entry.painted = performance.now(); });
}

async function watch(taskId) {
  let lastId = "";
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const h = headers();
      if (lastId) h["Last-Event-ID"] = lastId;
      const r = await fetch(`/v1/tasks/${taskId}/watch`, { headers: h });
      if (!r.ok) throw new Error("stream " + r.status);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        // Lines may end in CRLF, LF or CR (the SSE format allows all three).
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = {};
          for (const line of block.split("\n")) {
            const i = line.indexOf(":");
            if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1).replace(/^ /, "");
          }
          if (!fields.data) continue;
          if (fields.id) lastId = fields.id;
          const view = JSON.parse(fields.data);
          const arrived = performance.now();
          render(view);
          logged(view, arrived);
          if (["succeeded", "failed", "cancelled"].includes(view.status)) return;
        }
      }
    } catch (e) {
      await new Promise((ok) => setTimeout(ok, 1000)); // reconnect, resuming with Last-Event-ID
    }
  }
}

$("submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  localStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("go").disabled = true;
  try {
    const kind = $("kind").value;
    const images = { person: await readFile($("person")) };
    if (kind === "fitting") images.garment = await readFile($("garment"));
    const r = await fetch("/v1/tasks", {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify({ kind, prompt: $("prompt").value, images }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.status !== 202) {
      $("error").textContent = explain(r.status, body, r.headers.get("Retry-After"));
      return;
    }
    $("progress").classList.remove("hidden");
    $("result").classList.add("hidden");
    $("download").classList.add("hidden");
    render({ ...body, status: "queued" });
    watch(body.task_id);
  } catch (e) {
    $("error").textContent = e.message;
  } finally {
    $("go").disabled = false;
  }
});
