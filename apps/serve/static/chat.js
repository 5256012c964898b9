// The web chat of `rxt-edge serve`: one Conversations-API conversation, answers streamed from
// POST /v1/responses. The server keeps the conversation's memory (its STM); this page keeps only the
// transcript to show, in localStorage, so a reload continues where it was.
"use strict";

const $ = (id) => document.getElementById(id);
const saved = JSON.parse(localStorage.getItem("rxt-chat") || "{}");
let state = { conversation: saved.conversation || null, log: saved.log || [] };
let model = null;

function save() { localStorage.setItem("rxt-chat", JSON.stringify(state)); }

function headers() {
  const h = { "content-type": "application/json" };
  const key = localStorage.getItem("rxt-key");
  if (key) h.authorization = "Bearer " + key;
  return h;
}

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  if (r.status === 401) { $("key").hidden = false; throw new Error("this server needs an API key"); }
  if (!r.ok) {
    const err = await r.json().catch(() => ({}));
    throw Object.assign(new Error((err.error && err.error.message) || r.statusText), { status: r.status });
  }
  return r;
}

function show(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function ensureConversation() {
  if (state.conversation) {
    try { await api("GET", "/v1/conversations/" + state.conversation); return; }
    catch (e) { if (e.status !== 404) throw e; }  // expired or deleted: start a new one
    state = { conversation: null, log: [] };
    $("log").textContent = "";
  }
  state.conversation = (await (await api("POST", "/v1/conversations", {})).json()).id;
  save();
}

// Server-sent events from a fetch body: "event: ...\ndata: {...}\n\n" blocks.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

async function send(text) {
  $("status").textContent = "";
  await ensureConversation();
  show("user", text);
  state.log.push({ role: "user", text });
  save();
  const out = show("assistant", "");
  const r = await api("POST", "/v1/responses",
    { model, input: text, conversation: state.conversation, stream: true });
  for await (const ev of events(r)) {
    if (ev.type === "response.output_text.delta") out.textContent += ev.delta;
    if (ev.type === "response.failed") throw new Error(ev.response.error.message);
  }
  state.log.push({ role: "assistant", text: out.textContent });
  save();
}

$("ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const key = $("key").value.trim();
  if (key) localStorage.setItem("rxt-key", key);
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  $("send").disabled = true;
  try { await send(text); } catch (err) { $("status").textContent = err.message; }
  finally { $("send").disabled = false; $("text").focus(); }
});

$("new").addEventListener("click", async () => {
  state = { conversation: null, log: [] };
  save();
  $("log").textContent = "";
  $("status").textContent = "";
});

(async () => {
  for (const m of state.log) show(m.role, m.text);
  try {
    model = (await (await api("GET", "/v1/models")).json()).data[0].id;
    $("model").textContent = model;
  } catch (err) { $("status").textContent = err.message; }
})();
