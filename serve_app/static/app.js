// The user page: submit a photo, follow the task through its stages over Server-Sent Events, show
// the image. It talks to genqueue through its TypeScript client (the built module beside this
// file), which reads the stream with fetch() so that the token is sent, resumes a dropped stream
// with Last-Event-ID and retries what is safe to retry.
import { GenqueueClient, GenqueueError, newIdempotencyKey } from "/static/genqueue-client/genqueue-client.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "genqueue.token";
// The task the page follows until it ends, so that a reload picks it up again.
const TASK_KEY = "genqueue.task";
// The progress bar's steps, in order; a blocked task is shown on the quota step.
const STAGES = ["waiting", "waiting_for_quota", "starting", "generating", "done"];
const ENDED = ["succeeded", "failed", "cancelled", "expired"];
// Every update the page showed: task, position, status, stage, headline and ETA line, when it
// arrived and when it was painted.
window.genqueueLog = [];

let open = null; // the task followed: { id, kind, status, step, controller, task }
let pressing = false; // a press of Generate whose answer has not come yet
let unanswered = null; // { key, request } of a press that got no answer: the same request again reuses its key
let presses = 0; // so that a late result of an older task never shows under a newer one
let resultUrl = null;
let ticker = null;

// ---- words --------------------------------------------------------------------------------

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
const credits = (n) => plural(n, "credit", "credits");
const tryOn = (kind) => kind === "fitting";

function ordinal(n) {
  const s = ["th", "st", "nd", "rd"], v = n % 100;
  return n + (s[(v - 20) % 10] || s[v] || s[0]);
}

// "40 s", "3 min", "2 h 5 min".
function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 90) return `${s} s`;
  const m = Math.round(s / 60);
  return m < 90 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// "about 40–55 s", "about 2–3 min", "about 40 s".
function range(lo, hi) {
  if (hi == null || Math.round(hi) <= Math.round(lo)) return `about ${duration(lo)}`;
  if (hi < 90) return `about ${Math.round(lo)}–${Math.round(hi)} s`;
  const a = Math.round(lo / 60), b = Math.round(hi / 60);
  if (lo >= 90 && b < 90) return a === b ? `about ${a} min` : `about ${a}–${b} min`;
  return `about ${duration(lo)} to ${duration(hi)}`;
}

// When an epoch time comes: "40 s from now", or "17:05 (2 h 5 min from now)".
function fromNow(epoch) {
  const s = epoch - Date.now() / 1000;
  if (s < 90) return `${duration(s)} from now`;
  const clock = new Date(epoch * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `${clock} (${duration(s)} from now)`;
}

function blockedWords(view) {
  const reason = (view.blocked_reason || "").trim().replace(/[.;:]+$/, "");
  let text = "No generator is available right now" + (reason ? `: ${reason}` : "");
  text += "; we will start as soon as one is";
  if (view.blocked_until != null) text += `, about ${fromNow(view.blocked_until)}`;
  return text + ".";
}

function refundWords(view) {
  return view.refunded > 0 ? `${credits(view.refunded)} refunded.` : "";
}

// A task whose deadline passed before its call could start: it was refunded and made no image.
function expiredWords(view, balance) {
  let text = "It could not start before your deadline, so ";
  if (view.refunded > 0) {
    text += `it cost nothing: ${credits(view.refunded)} refunded`;
    if (balance != null) text += `; your balance is now ${credits(balance)}`;
  } else {
    text += "nothing was charged";
  }
  return text + ". Please try again, or allow more time.";
}

// What a failed task's error means to the person who asked for the image, when it can be told.
function failureWords(error) {
  const e = error || "";
  if (/blocked|safety|prohibited|recitation/i.test(e)) return "The generator declined this request.";
  if (/no image|without an image|empty/i.test(e)) return "The generator returned no image.";
  if (/input image unreadable/i.test(e)) return "Your photo could not be read.";
  return "";
}

// A refused submit in words: never a field name, never the API's own detail.
function explain(status, problem, retryAfter) {
  const wait = Number(retryAfter || problem.retry_after) || 0;
  const later = wait ? `in ${duration(wait)}` : "in a moment";
  switch (status) {
    case 400: return "The page sent something the service could not read. Please reload the page and try again.";
    case 401: return token() ? "Your access token is not valid. Please check it and try again." : "Please enter your access token first.";
    case 402: return `You are out of credits: you have ${problem.balance}, and this costs ${problem.price}.`;
    case 403: return "Your access token may not make images here. Please ask for a user token.";
    case 408: return "Your photos took too long to arrive. Please try again.";
    case 409: return "This press clashed with an earlier one. Please press Generate again.";
    case 413: return "Those photos are too large to send. Please choose smaller ones.";
    case 422: return unusable(problem);
    case 429: return busy(problem, later);
    case 503:
      if (problem.blocked_reason) return `No generator is available right now: ${problem.blocked_reason}. Nothing was charged; please try again ${later}.`;
      if (problem.intake === "paused") return `New images are paused for the moment. Nothing was charged; please try again ${later}.`;
      return `The service is not available right now. Please try again ${later}.`;
    default: return status >= 500 ? "Something went wrong on our side. Please try again in a moment." : "Something went wrong. Please try again.";
  }
}

const PHOTOS = { "images.person": "Your photo", "images.garment": "The garment photo" };

function unusable(problem) {
  const first = (problem.errors || [])[0] || {};
  if (first.field === "prompt") return "Your style text is too long. Please shorten it.";
  const photo = PHOTOS[first.field];
  if (!photo) return "Something in the request can't be used. Please check your photos and style.";
  const why = first.message || "";
  if (/required/.test(why)) return `Please choose ${photo.toLowerCase()}.`;
  if (/larger than|the limit is|too many pixels/.test(why)) return `${photo} is too large. Please choose a smaller one.`;
  return `${photo} can't be used: it is not a PNG, JPEG or WebP image we can read. Please choose another one.`;
}

function busy(problem, later) {
  if (/per user/.test(problem.detail || "")) return `You already have ${problem.waiting} images waiting. Please try again ${later}.`;
  if (problem.waiting != null) return `The queue is full right now. Please try again ${later}.`;
  return `You are sending too fast. Please try again ${later}.`;
}

// ---- the service --------------------------------------------------------------------------

function token() {
  return $("token").value.trim();
}

// A 429 or 503 that asks for a short wait is waited out; a longer one is said beside the button.
const client = new GenqueueClient({ token, retry: { maxRetryAfterSeconds: 5 } });

const say = (text) => { $("error").textContent = text; };
const refusal = (e) => (e instanceof GenqueueError ? e.status : 0);

function showBalance(n) {
  $("balance").classList.toggle("hidden", n == null);
  if (n != null) $("balance-value").textContent = credits(n);
}

async function loadBalance() {
  if (!token()) { showBalance(null); return null; }
  try {
    const me = await client.me();
    // A user who was never granted nor charged anything: credits are likely off here.
    const shown = me.balance || me.granted || me.charged ? me.balance : null;
    showBalance(shown);
    return me.balance;
  } catch (e) {
    if (e instanceof GenqueueError) showBalance(null);
    return null;
  }
}

// The file chosen in `input`; the client sends it as base64, as the API takes it.
function chosen(input, what) {
  const file = input.files[0];
  if (!file) throw new Error(`Please choose ${what}.`);
  return file;
}

// What makes two presses the same request: the kind, the style and the files chosen.
function requestOf(kind, prompt, images) {
  const f = (file) => file && [file.name, file.size, file.lastModified, file.type];
  return JSON.stringify([kind, prompt, f(images.person), f(images.garment)]);
}

// ---- painting a task ----------------------------------------------------------------------

function stageOf(view) {
  switch (view.status) {
    case "running": return "generating";
    case "succeeded": return "done";
    case "failed": case "cancelled": case "expired": return view.status;
    default: return view.stage || "waiting"; // a queued task with no stage from the API waits for its turn
  }
}

function paintBar(stage, kind) {
  const bar = $("stages");
  let step = stage === "blocked" ? 1 : STAGES.indexOf(stage);
  if (step < 0) step = open ? open.step : 0; // failed, cancelled or expired: the bar stays where the task got to
  else if (open) open.step = step;
  bar.classList.toggle("ended", ["failed", "cancelled", "expired"].includes(stage));
  bar.classList.toggle("finished", stage === "done");
  bar.querySelectorAll("li").forEach((li, i) => {
    li.classList.toggle("passed", i < step);
    li.classList.toggle("current", i === step);
    li.classList.toggle("blocked", i === step && stage === "blocked");
    if (i === step) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
  });
  bar.querySelector('[data-stage="generating"]').textContent = tryOn(kind) ? "Trying on" : "Generating";
  bar.querySelector('[data-stage="waiting_for_quota"]').textContent = stage === "blocked" ? "No generator" : "Waiting for quota";
}

// The ETA line, counting down each second: the call's start, p50 to p90.
function countdown(view) {
  let lo = view.eta_seconds;
  const hi = view.eta_p90_seconds;
  if (lo == null && view.quota_until != null) lo = view.quota_until - Date.now() / 1000;
  if (lo == null) return;
  const t0 = performance.now();
  const paint = () => {
    const gone = (performance.now() - t0) / 1000;
    const a = Math.max(0, lo - gone), b = hi == null ? null : Math.max(a, hi - gone);
    const top = b == null ? a : b;
    let when = `in ${range(a, b)}`;
    if (top < 1) when = "any moment now";
    else if (a < 1) when = `within ${duration(top)}`;
    $("eta").textContent = `We start on it ${when}`;
  };
  paint();
  ticker = setInterval(paint, 1000);
}

function render(view) {
  const kind = view.kind || (open && open.kind) || $("kind").value;
  const stage = stageOf(view);
  paintBar(stage, kind);
  clearInterval(ticker);
  $("eta").textContent = "";
  $("detail").textContent = "";
  // Only a task still waiting for its turn can be cancelled: once handed to a worker it is not.
  const cancellable = view.status === "queued" && ["waiting", "blocked"].includes(stage);
  $("cancel").classList.toggle("hidden", !open || !cancellable);
  const status = (text) => { $("status").textContent = text; };
  switch (stage) {
    case "waiting": {
      const ahead = view.position;
      status(ahead == null ? "Waiting in line" : ahead === 0 ? "You are next in line" : `You are ${ordinal(ahead + 1)} in line`);
      countdown(view);
      break;
    }
    case "waiting_for_quota": status("Your turn has come: waiting for quota"); countdown(view); break;
    case "starting": status("Starting…"); countdown(view); break;
    case "blocked": status("Waiting for a generator"); $("detail").textContent = blockedWords(view); break;
    case "generating": status(tryOn(kind) ? "Trying on…" : "Generating…"); break;
    case "done":
      status(tryOn(kind) ? "Here is your try-on" : "Here is your image");
      showResult(view.task_id, kind);
      break;
    case "cancelled": status("Cancelled"); $("detail").textContent = refundWords(view); break;
    case "expired":
      status(tryOn(kind) ? "Your try-on could not start in time" : "Your image could not start in time");
      $("detail").textContent = expiredWords(view, null);
      break;
    default:
      status(tryOn(kind) ? "We could not make your try-on" : "We could not make this image");
      $("detail").textContent = [failureWords(view.error), refundWords(view)].filter(Boolean).join(" ");
  }
  if (ENDED.includes(view.status)) {
    const balance = finish();
    if (stage === "expired") showBalanceAfter(view, balance);
  }
  return stage;
}

// The balance an expired task's refund left, once it is read (unless another press came first).
async function showBalanceAfter(view, reading) {
  const press = presses;
  const balance = await reading;
  if (press === presses && balance != null) $("detail").textContent = expiredWords(view, balance);
}

function logged(view, stage, arrived) {
  const entry = {
    task: view.task_id, position: view.position, status: view.status, stage, said: $("status").textContent,
    eta: $("eta").textContent, arrived, painted: null,
  };
  window.genqueueLog.push(entry);
  requestAnimationFrame(() => { entry.painted = performance.now(); });
}

function clearResult() {
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = null;
  $("result").removeAttribute("src");
  $("download").removeAttribute("href");
  $("result").classList.add("hidden");
  $("download").classList.add("hidden");
}

async function showResult(taskId, kind) {
  const press = presses;
  try {
    const blob = await client.task(taskId).result();
    if (press !== presses) return;
    clearResult();
    resultUrl = URL.createObjectURL(blob);
    const ext = { "image/jpeg": "jpg", "image/webp": "webp" }[blob.type] || "png";
    $("result").src = resultUrl;
    $("result").alt = tryOn(kind) ? "your try-on" : "your generated image";
    $("download").href = resultUrl;
    $("download").download = (tryOn(kind) ? "genqueue-try-on." : "genqueue-image.") + ext;
    $("result").classList.remove("hidden");
    $("download").classList.remove("hidden");
  } catch (e) {
    if (press !== presses) return;
    const gone = [404, 410].includes(refusal(e));
    say(gone ? "The image is no longer stored." : "We could not fetch the image. Please reload the page.");
  }
}

// ---- following a task ---------------------------------------------------------------------

function follow(view) {
  if (open) open.controller.abort();
  open = {
    id: view.task_id, kind: view.kind, status: view.status, step: 0, controller: new AbortController(),
    task: client.task(view.task_id),
  };
  const task = open;
  localStorage.setItem(TASK_KEY, view.task_id);
  $("progress").classList.remove("hidden");
  $("go").disabled = true;
  logged(view, render(view), performance.now());
  if (open === task) watch(task);
}

// The task ended (or cannot be followed any more): Generate may be pressed again. The balance
// is read again; the reading is returned.
function finish() {
  if (open) open.controller.abort();
  open = null;
  localStorage.removeItem(TASK_KEY);
  clearInterval(ticker);
  $("cancel").classList.add("hidden");
  $("go").disabled = pressing;
  return loadBalance();
}

async function watch(task) {
  const signal = task.controller.signal;
  try {
    // Each update as it comes, until the task ends; a dropped stream is resumed by the client.
    for await (const view of task.task.watch({ signal })) {
      if (signal.aborted) return;
      const arrived = performance.now();
      task.status = view.status;
      logged(view, render(view), arrived);
    }
  } catch (e) {
    if (signal.aborted) return;
    const status = refusal(e);
    if (status === 401 || status === 404) {
      finish();
      say(status === 401 ? "Your access token is no longer valid, so we cannot follow your image." : "We could not find your image any more.");
      return;
    }
    say("We lost contact with the service. Reload the page to see how your image is doing.");
  }
}

// A reload while a task is open: pick it up again (a task that ended meanwhile shows how it ended).
async function resume() {
  const id = localStorage.getItem(TASK_KEY);
  if (!id || !token()) return;
  try {
    const view = await client.task(id).status();
    if (!open && !pressing) follow(view);
  } catch (e) {
    const status = refusal(e);
    if (status === 401 || status === 404) { localStorage.removeItem(TASK_KEY); return; }
    say(status
      ? "We could not check on your image. Please reload the page in a moment."
      : "We could not reach the service to check on your image. Please reload the page in a moment.");
  }
}

// ---- the controls -------------------------------------------------------------------------

$("token").value = localStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("change", () => {
  localStorage.setItem(TOKEN_KEY, token());
  loadBalance();
});
$("kind").addEventListener("change", () => {
  $("garment-box").classList.toggle("hidden", $("kind").value !== "fitting");
});

$("submit-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (pressing || open) return; // one press at a time, and never while a task is open
  pressing = true;
  presses += 1;
  $("go").disabled = true;
  say("");
  clearResult();
  clearInterval(ticker);
  $("progress").classList.add("hidden");
  localStorage.setItem(TOKEN_KEY, token());
  try {
    const kind = $("kind").value;
    const prompt = $("prompt").value;
    const images = { person: chosen($("person"), "your photo") };
    if (kind === "fitting") images.garment = chosen($("garment"), "the garment photo");
    // One key per press; a press whose answer was lost (after the client's own retries) is sent
    // again under its key, so that the service answers with the task it already made (and
    // charged for) instead of a second one.
    const request = requestOf(kind, prompt, images);
    const key = unanswered && unanswered.request === request ? unanswered.key : newIdempotencyKey();
    unanswered = { key, request };
    let task;
    try {
      task = await client.submit(kind, images, prompt, { idempotencyKey: key });
    } catch (e) {
      if (e instanceof DOMException && e.name === "NotReadableError") {
        unanswered = null; // a file that could not be read was never sent
        throw new Error("Your photo could not be read. Please choose it again.");
      }
      if (!(e instanceof GenqueueError)) {
        throw new Error("We could not reach the service. Please check your connection and press Generate again.");
      }
      unanswered = null;
      say(explain(e.status, e.problem, e.retryAfter));
      if (e.status === 402) showBalance(e.balance);
      return;
    }
    unanswered = null;
    const answer = task.submitted;
    if (answer.balance != null) showBalance(answer.balance);
    follow({ ...answer, kind, status: answer.status || "queued" });
  } catch (e) {
    say(e.message);
  } finally {
    pressing = false;
    $("go").disabled = open !== null;
  }
});

$("cancel").addEventListener("click", async () => {
  const task = open;
  if (!task) return;
  $("cancel").disabled = true;
  say("");
  try {
    let answer;
    try {
      answer = await task.task.cancel();
    } catch (e) {
      if (!(e instanceof GenqueueError)) throw e;
      say(e.status === 409
        ? `${tryOn(task.kind) ? "Your try-on" : "Your image"} is already with a generator, so it can no longer be cancelled.`
        : "We could not cancel right now. Please try again in a moment.");
      return;
    }
    task.controller.abort();
    const view = { task_id: task.id, kind: task.kind, status: "cancelled", refunded: answer.refunded };
    if (open === task) logged(view, render(view), performance.now());
    const balance = await loadBalance();
    if (answer.refunded > 0 && balance != null) {
      $("detail").textContent = `${credits(answer.refunded)} refunded; your balance is now ${credits(balance)}.`;
    }
  } catch {
    say("We could not reach the service to cancel. Please try again.");
  } finally {
    $("cancel").disabled = false;
  }
});

loadBalance();
resume();
