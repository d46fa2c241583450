// nearline browser client: progressive answers over SSE (fetch) or WebSocket.
// An ES module with no build step and no dependencies:
//   import { streamChat, NearlineSocket } from "/static/nearline.js";
// The wire protocol is docs/protocol.md. Callbacks (all optional):
//   onPreliminary({text, source, similarity})  a fast answer; repeated while a draft streams,
//                                               each time with the whole text so far
//   onReplace({action})                         "replace" or "confirm", once, before the refinement
//   onDelta(text)                               the next piece of the refined answer
//   onUsage({prompt_tokens, completion_tokens, cached_tokens})
//   onDone({finishReason, source, text})        the refined answer is complete
//   onError(error)                              an OpenAI-shaped {message, type, param, code}

const NEARLINE_COMMENT = ": nearline ";

/** The request body with progressive mode on, unless the caller said otherwise. */
function progressiveBody(body, stream) {
  const options = { progressive: true, ...(body.nearline || {}) };
  return { ...body, stream, nearline: options };
}

function call(callback, ...args) {
  if (typeof callback === "function") callback(...args);
}

function errorObject(error) {
  if (error && typeof error === "object" && "message" in error) return error;
  return { message: String(error), type: "client_error", param: null, code: null };
}

/**
 * Split a stream of bytes into SSE lines and hand each to `onLine`.
 * Handles \n, \r\n and \r line ends, and lines cut across network chunks.
 */
async function readLines(body, onLine) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = done ? "" : lines.pop();
    for (const line of lines) {
      if (onLine(line) === false) {
        await reader.cancel();
        return;
      }
    }
    if (done) return;
  }
}

/**
 * One streamed chat completion over fetch + SSE. Resolves to
 * {text, preliminary, action, finishReason, source} when the answer ends; rejects only when
 * `signal` aborts it (errors go to onError and resolve with `error` set).
 */
export async function streamChat({
  baseUrl = "",
  apiKey,
  body,
  progressive = true,
  onPreliminary,
  onReplace,
  onDelta,
  onUsage,
  onDone,
  onError,
  signal,
}) {
  const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const payload = progressive ? progressiveBody(body, true) : { ...body, stream: true };
  const result = {
    text: "", preliminary: null, action: null, finishReason: null, source: null, error: null,
  };
  const fail = (error) => {
    result.error = errorObject(error);
    call(onError, result.error);
    return result;
  };
  let response;
  try {
    response = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: "POST", headers, body: JSON.stringify(payload), signal,
    });
  } catch (error) {
    if (signal && signal.aborted) throw error;
    return fail({ message: `cannot reach nearline: ${error}`, type: "connection_error" });
  }
  result.source = response.headers.get("x-nearline-source");
  if (!response.ok) {
    let error = { message: `HTTP ${response.status}`, type: "http_error", code: null };
    try {
      error = (await response.json()).error || error;
    } catch (_) {
      // not JSON: keep the status line
    }
    return fail(error);
  }
  let data = [];
  const dispatch = () => {
    const text = data.join("\n");
    data = [];
    if (text === "[DONE]") return false;
    if (!text) return true;
    const chunk = JSON.parse(text);
    if (chunk.error) {
      fail(chunk.error);
      return true;
    }
    if (chunk.nearline && chunk.nearline.source) result.source = chunk.nearline.source;
    if (chunk.usage) call(onUsage, chunk.usage);
    for (const choice of chunk.choices || []) {
      const content = choice.delta && choice.delta.content;
      if (content) {
        result.text += content;
        call(onDelta, content);
      }
      if (choice.finish_reason) result.finishReason = choice.finish_reason;
    }
    return true;
  };
  const onLine = (line) => {
    if (line.startsWith(NEARLINE_COMMENT)) {
      const event = JSON.parse(line.slice(NEARLINE_COMMENT.length));
      if (event.type === "preliminary") {
        result.preliminary = event;
        call(onPreliminary, event);
      } else if (event.type === "replace") {
        result.action = event.action;
        call(onReplace, event);
      }
      return true;
    }
    if (line.startsWith(":")) return true; // any other comment (keep-alives)
    if (line.startsWith("data:")) {
      data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      return true;
    }
    if (line === "") return dispatch();
    return true; // event:, id:, retry: are not used by nearline
  };
  try {
    await readLines(response.body, onLine);
  } catch (error) {
    if (signal && signal.aborted) throw error;
    return fail({ message: `the stream broke: ${error}`, type: "connection_error" });
  }
  if (result.error) return result;
  if (!result.finishReason) return fail({ message: "the stream ended early", type: "connection_error" });
  call(onDone, { finishReason: result.finishReason, source: result.source, text: result.text });
  return result;
}

/** The WebSocket URL for a gateway base URL ("" means this page's origin). */
export function socketUrl(baseUrl = "") {
  const base = new URL(baseUrl || window.location.origin, window.location.href);
  base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  base.pathname = base.pathname.replace(/\/$/, "") + "/v1/ws";
  return base.toString();
}

/**
 * Several requests over one WebSocket (`GET /v1/ws`), each with its own callbacks.
 *   const socket = new NearlineSocket({ baseUrl, apiKey });
 *   const id = socket.chat(body, { onPreliminary, onReplace, onDelta, onDone, onError });
 *   socket.cancel(id);
 * Requests sent before the socket opens are queued. Connection-level errors (a malformed
 * message, failed authentication) go to the constructor's `onError`.
 */
export class NearlineSocket {
  constructor({ baseUrl = "", url, apiKey, onError, WebSocketImpl } = {}) {
    this.url = url || socketUrl(baseUrl);
    this.apiKey = apiKey;
    this.onError = onError;
    this.requests = new Map();
    this.queue = [];
    this.nextId = 1;
    const Impl = WebSocketImpl || WebSocket;
    this.socket = new Impl(this.url);
    this.socket.binaryType = "arraybuffer";
    this.socket.addEventListener("open", () => this._opened());
    this.socket.addEventListener("message", (event) => this._received(event.data));
    this.socket.addEventListener("close", (event) => this._closed(event));
    this.opened = new Promise((resolve, reject) => {
      this._resolveOpen = resolve;
      this._rejectOpen = reject;
    });
    this.opened.catch(() => {}); // callers that never await it must not see an unhandled rejection
  }

  /** Send a chat request; returns its id. `body` is a Chat Completions request body. */
  chat(body, callbacks = {}, { id, progressive = true } = {}) {
    const requestId = id || `r${this.nextId++}`;
    const state = { callbacks, text: "", preliminary: null, action: null };
    state.finished = new Promise((resolve) => { state.resolve = resolve; });
    this.requests.set(requestId, state);
    const payload = progressive ? progressiveBody(body, true) : { ...body, stream: true };
    this._send({ type: "chat", id: requestId, body: payload });
    return requestId;
  }

  /** Resolves with {text, preliminary, action, finishReason, source, error} when `id` ends. */
  finished(id) {
    const state = this.requests.get(id);
    return state ? state.finished : Promise.resolve(null);
  }

  /** Stop one request: the gateway stops its upstream work; no further callbacks for it. */
  cancel(id) {
    const state = this.requests.get(id);
    if (!state) return;
    this.requests.delete(id);
    this._send({ type: "cancel", id });
    state.resolve({ text: state.text, preliminary: state.preliminary, cancelled: true });
  }

  close() {
    this.socket.close(1000);
  }

  _send(message) {
    const text = JSON.stringify(message);
    if (this.socket.readyState === 1) this.socket.send(text);
    else this.queue.push(text);
  }

  _opened() {
    if (this.apiKey) this.socket.send(JSON.stringify({ type: "auth", api_key: this.apiKey }));
    for (const text of this.queue.splice(0)) this.socket.send(text);
    this._resolveOpen(this);
  }

  _received(data) {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    let message;
    try {
      message = JSON.parse(text);
    } catch (error) {
      call(this.onError, errorObject(`not a nearline message: ${error}`));
      return;
    }
    if (message.id === null || message.id === undefined) {
      call(this.onError, message.error);
      return;
    }
    const state = this.requests.get(message.id);
    if (!state) return; // cancelled: late messages are dropped
    const callbacks = state.callbacks;
    switch (message.type) {
      case "preliminary":
        state.preliminary = message;
        call(callbacks.onPreliminary, message);
        break;
      case "replace":
        state.action = message.action;
        call(callbacks.onReplace, message);
        break;
      case "delta":
        state.text += message.text;
        call(callbacks.onDelta, message.text);
        break;
      case "usage":
        call(callbacks.onUsage, message);
        break;
      case "done":
        this.requests.delete(message.id);
        call(callbacks.onDone, {
          finishReason: message.finish_reason, source: message.source, text: state.text,
        });
        state.resolve({
          text: state.text, preliminary: state.preliminary, action: state.action,
          finishReason: message.finish_reason, source: message.source, error: null,
        });
        break;
      case "error":
        this.requests.delete(message.id);
        call(callbacks.onError, message.error);
        state.resolve({ text: state.text, preliminary: state.preliminary, error: message.error });
        break;
      default:
        break; // a newer server's message type: ignore it
    }
  }

  _closed(event) {
    const error = {
      message: `the connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""})`,
      type: "connection_error", param: null, code: null,
    };
    this._rejectOpen(error);
    for (const [id, state] of this.requests) {
      call(state.callbacks.onError, error);
      state.resolve({ text: state.text, preliminary: state.preliminary, error });
      this.requests.delete(id);
    }
  }
}
