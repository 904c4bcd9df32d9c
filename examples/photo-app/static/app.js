// The photo app's page. It uploads a photo to the app's backend (POST /api/generate), which
// submits it to genqueue for the logged-in user, then follows the task with genqueue's
// TypeScript client. The client is pointed at the backend ("/genqueue"), which relays genqueue's
// task and watch routes for this user's own tasks: the browser never holds a genqueue token, and
// the client still reads the Server-Sent Events with fetch, resumes a dropped stream with
// Last-Event-ID and retries what is safe to retry. The finished image comes straight from
// genqueue through the task's signed, expiring result link.
import { GenqueueClient, GenqueueError, newIdempotencyKey } from "/vendor/genqueue-client/genqueue-client.js";

const $ = (id) => document.getElementById(id);
const SESSION = "photo-app.session";
const OPEN_TASK = "photo-app.task";
const ENDED = ["succeeded", "failed", "cancelled", "expired"];

let session = JSON.parse(sessionStorage.getItem(SESSION) || "null");
const client = new GenqueueClient({ baseUrl: "/genqueue", token: () => session?.token });

// A request to the backend as the logged-in user; its problem's detail thrown as an Error.
async function api(path, init = {}) {
  const headers = { ...init.headers, Authorization: `Bearer ${session?.token ?? ""}` };
  const response = await fetch(path, { ...init, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `the app answered ${response.status}`);
  return body;
}

function say(problem) {
  $("problem").textContent = problem instanceof GenqueueError ? problem.detail || problem.title : String(problem.message ?? problem);
}

function show(view) {
  $("task").textContent = view.task_id;
  $("status").textContent = view.status;
  const parts = [];
  if (view.stage) parts.push(view.stage.replaceAll("_", " "));
  if (view.position != null) parts.push(`${view.position} ahead`);
  if (view.eta_seconds != null) parts.push(`starts in about ${Math.round(view.eta_seconds)} s`);
  if (view.status === "expired") parts.push(expiredWords(view));
  else if (view.error) parts.push(view.error);
  $("detail").textContent = parts.length ? `(${parts.join(", ")})` : "";
}

// A task whose deadline passed before its call could start: refunded, no image.
function expiredWords(view) {
  const refund = view.refunded > 0 ? `, so it cost nothing: ${view.refunded} credit${view.refunded === 1 ? "" : "s"} refunded` : "";
  return `it could not start before its deadline${refund}; try again, or allow more time`;
}

// Follow a task to its end, show its image, then what the backend heard from genqueue's webhook.
async function follow(taskId) {
  sessionStorage.setItem(OPEN_TASK, taskId);
  $("go").disabled = true;
  $("result").hidden = true;
  $("webhook").textContent = "";
  try {
    const task = client.task(taskId);
    let last = null;
    for await (const view of task.watch()) {
      last = view;
      show(view);
    }
    if (last?.status === "succeeded") {
      const view = await task.status(); // carries the signed result link
      $("result").src = view.result_url;
      $("result").hidden = false;
    }
    await webhookOf(taskId);
  } catch (error) {
    say(error);
  } finally {
    sessionStorage.removeItem(OPEN_TASK);
    $("go").disabled = false;
  }
}

// The completion webhook usually lands within a second of the task's end: ask a few times.
async function webhookOf(taskId) {
  for (let i = 0; i < 20; i++) {
    const { webhook } = await api(`/api/tasks/${taskId}`);
    if (webhook) {
      const at = new Date(webhook.received_at * 1000).toLocaleTimeString();
      $("webhook").textContent = `The app's backend received genqueue's signed webhook (${webhook.status}) at ${at}.`;
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  $("webhook").textContent = "No completion webhook has reached the app's backend yet.";
}

function enter() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = session.user;
  const open = sessionStorage.getItem(OPEN_TASK);
  if (open) follow(open); // a reload picks the open task up again
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    session = await api("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value }),
    });
    sessionStorage.setItem(SESSION, JSON.stringify(session));
    enter();
  } catch (error) {
    alert(error.message);
  }
});

$("logout").addEventListener("click", () => {
  sessionStorage.clear();
  location.reload();
});

$("generate").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("problem").textContent = "";
  const form = new FormData($("generate"));
  try {
    // One key per press: the backend passes it to genqueue, so a retried press is charged once.
    const submitted = await api("/api/generate", {
      method: "POST",
      body: form,
      headers: { "Idempotency-Key": newIdempotencyKey() },
    });
    show({ task_id: submitted.task_id, status: submitted.status, position: submitted.position, eta_seconds: submitted.eta_seconds });
    await follow(submitted.task_id);
  } catch (error) {
    say(error);
  }
});

const { users } = await (await fetch("/api/users")).json();
for (const user of users) $("user").append(new Option(user, user));
if (session) enter();
