// The demo chat page: shows the preliminary answer at once, marked, and swaps in the
// refinement without a flash. All protocol work is in nearline.js.
import { NearlineSocket, streamChat } from "./nearline.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(window.location.search);
const modelSelect = $("#model");
const transportSelect = $("#transport");
const keyInput = $("#api-key");
const messages = $("#messages");
const form = $("#ask");
const question = $("#question");
const history = [];
let socket = null;

// Every progressive moment, for people debugging and for the browser test.
window.nearlineTimeline = [];
const mark = (type, detail = {}) =>
  window.nearlineTimeline.push({ type, t: performance.now(), ...detail });

const BADGES = { draft: "draft", "semantic-near": "related answer", precomputed: "precomputed" };

function badgeFor(preliminary) {
  const base = preliminary.source.startsWith("cascade:") ? "draft" : preliminary.source;
  let label = BADGES[base] || base;
  if (preliminary.similarity != null) label += ` · ${Math.round(preliminary.similarity * 100)}% similar`;
  return label;
}

const seconds = (ms) => (Number(ms) < 1000 ? `${ms} ms` : `${(Number(ms) / 1000).toFixed(1)} s`);

/** "first content 120 ms · refined 1.8 s · done 2.4 s", from the bubble's timestamps. */
function timingLine(times) {
  const first = times.preliminaryAt ?? times.firstDeltaAt;
  const parts = [];
  if (first !== undefined) parts.push(`first content ${seconds(first)}`);
  if (times.fallback) parts.push("no refined answer");
  else if (times.preliminaryAt !== undefined && times.firstDeltaAt !== undefined) {
    parts.push(`refined ${seconds(times.firstDeltaAt)}`);
  }
  if (times.doneAt !== undefined) parts.push(`done ${seconds(times.doneAt)}`);
  return parts.join(" · ");
}

function apiKey() {
  return keyInput.value.trim() || undefined;
}

async function loadModels() {
  const headers = apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
  try {
    const response = await fetch("v1/models", { headers });
    const models = response.ok ? (await response.json()).data.map((m) => m.id) : [];
    modelSelect.replaceChildren(...models.map((id) => new Option(id, id)));
    if (response.status === 401) {
      modelSelect.replaceChildren(new Option("enter an API key", ""));
      keyInput.focus();
    }
    const wanted = params.get("model");
    if (wanted && models.includes(wanted)) modelSelect.value = wanted;
  } catch (error) {
    console.warn("nearline: cannot list models", error);
  }
}

function addMessage(role, text) {
  const article = document.createElement("article");
  article.className = `message ${role}`;
  article.textContent = text;
  messages.append(article);
  article.scrollIntoView({ block: "end" });
  return article;
}

/** An assistant bubble and the callbacks that drive it. */
function assistantBubble() {
  const article = document.createElement("article");
  article.className = "message assistant";
  article.dataset.state = "waiting";
  article.innerHTML =
    '<div class="meta"><span class="badge"></span><span class="status"></span>' +
    '<span class="timing"></span></div>' +
    '<div class="layers"><p class="preliminary"></p><p class="refined"></p></div>' +
    '<p class="error" role="alert"></p>';
  messages.append(article);
  const badge = article.querySelector(".badge");
  const status = article.querySelector(".status");
  const preliminaryText = article.querySelector(".preliminary");
  const refinedText = article.querySelector(".refined");
  const errorText = article.querySelector(".error");
  const timing = article.querySelector(".timing");
  const started = performance.now();
  const stamp = (name) => {
    article.dataset[name] = String(Math.round(performance.now() - started));
  };
  let refined = "";
  let sawDelta = false;
  const scroll = () => article.scrollIntoView({ block: "end" });

  return {
    article,
    onPreliminary(preliminary) {
      if (!article.dataset.preliminaryAt) {
        stamp("preliminaryAt");
        mark("preliminary", { source: preliminary.source });
      }
      preliminaryText.textContent = preliminary.text;
      badge.textContent = badgeFor(preliminary);
      article.dataset.source = preliminary.source;
      article.dataset.state = "preliminary";
      status.textContent = "refining…";
      scroll();
    },
    onReplace({ action, source }) {
      mark("replace", { action, source });
      article.dataset.action = action;
      // a source on `replace`: the refined answer failed and the preliminary stands
      if (source) article.dataset.fallback = source;
      if (action === "confirm" && !source) badge.textContent += " · confirmed";
    },
    onDelta(text) {
      if (!sawDelta) {
        sawDelta = true;
        stamp("firstDeltaAt");
        mark("delta");
        article.dataset.state = "refining";
      }
      refined += text;
      refinedText.textContent = refined;
      scroll();
    },
    onDone({ source }) {
      stamp("doneAt");
      mark("done", { source });
      article.dataset.state = "final";
      article.dataset.answeredBy = source || "";
      if (article.dataset.fallback) {
        status.textContent = `${article.dataset.fallback} kept: the refined answer failed`;
      } else if (article.dataset.source) {
        // keep the meta line (no jump) and say what happened to the draft
        status.textContent = article.dataset.action === "confirm" ? "draft confirmed" : "refined";
      } else {
        status.textContent = source && source !== "inference" ? `from ${source}` : "";
      }
      badge.textContent = article.dataset.fallback ? article.dataset.fallback : "";
      timing.textContent = timingLine(article.dataset);
      // the preliminary has faded out; stop it holding the bubble's height
      setTimeout(() => { if (article.dataset.state === "final") preliminaryText.hidden = true; }, 400);
      history.push({ role: "assistant", content: refined });
    },
    onError(error) {
      mark("error", { message: error.message });
      article.dataset.state = "error";
      status.textContent = "";
      errorText.textContent = error.message || "the answer failed";
      if (refined) preliminaryText.hidden = true;
    },
  };
}

function openSocket() {
  if (!socket || socket.socket.readyState > 1) {
    socket = new NearlineSocket({
      apiKey: apiKey(),
      onError: (error) => console.warn("nearline:", error.message),
    });
  }
  return socket;
}

async function ask(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const bubble = assistantBubble();
  const body = { model: modelSelect.value, messages: history.slice() };
  mark("sent");
  if (transportSelect.value === "ws") {
    const connection = openSocket();
    const id = connection.chat(body, bubble);
    await connection.finished(id);
  } else {
    await streamChat({ apiKey: apiKey(), body, ...bubble });
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = question.value.trim();
  if (!text || !modelSelect.value) return;
  question.value = "";
  form.querySelector("button").disabled = true;
  try {
    await ask(text);
  } finally {
    form.querySelector("button").disabled = false;
    question.focus();
  }
});

question.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

keyInput.addEventListener("change", () => {
  if (socket) socket.close();
  socket = null;
  loadModels();
});

if (params.get("transport") === "ws") transportSelect.value = "ws";
await loadModels();
document.body.dataset.ready = "true";
