// The wsgate demo page: rooms, messages, presence and the node this page is
// connected to, using nothing but the reference client.
import { WsgateClient } from "/client/wsgate.js";

const params = new URLSearchParams(location.search);
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const urls = (params.get("ws") || `${scheme}//${location.host}/ws`)
  .split(",")
  .map((u) => u.trim())
  .filter(Boolean);

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  node: $("node"),
  user: $("user"),
  room: $("room"),
  rooms: $("room-list"),
  presence: $("presence"),
  presenceRoom: $("presence-room"),
  messages: $("messages"),
  text: $("text"),
  send: $("send"),
};
if (params.get("room")) ui.room.value = params.get("room");

const client = new WsgateClient({ url: urls });
const joined = new Map(); // room -> {history: bool}
let selected = null;

// Exposed for curious users and for the browser test.
window.wsgateDemo = { client, urls, joined };

function line(kind, parts, attributes = {}) {
  const li = document.createElement("li");
  li.className = kind;
  for (const [name, value] of Object.entries(attributes)) li.dataset[name] = value;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text;
    li.append(span);
  }
  const atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  ui.messages.append(li);
  while (ui.messages.children.length > 500) ui.messages.firstElementChild.remove();
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
  return li;
}

function system(text, level = "") {
  return line(`system ${level}`.trim(), [["text", text]]);
}

function render(data) {
  if (data && typeof data === "object" && typeof data.text === "string") return data.text;
  return typeof data === "string" ? data : JSON.stringify(data);
}

function renderRooms() {
  ui.rooms.replaceChildren();
  for (const room of joined.keys()) {
    const li = document.createElement("li");
    li.dataset.room = room;
    li.setAttribute("aria-selected", String(room === selected));
    const name = document.createElement("span");
    name.textContent = room;
    const leave = document.createElement("button");
    leave.type = "button";
    leave.title = `leave ${room}`;
    leave.textContent = "×";
    leave.addEventListener("click", (event) => {
      event.stopPropagation();
      leaveRoom(room);
    });
    li.append(name, leave);
    li.addEventListener("click", () => select(room));
    ui.rooms.append(li);
  }
  const canPublish = selected !== null;
  ui.text.disabled = ui.send.disabled = !canPublish;
  ui.text.placeholder = canPublish ? `Message to ${selected}` : "Join a room first";
}

function select(room) {
  selected = room;
  renderRooms();
  refreshPresence();
}

async function refreshPresence() {
  const room = selected;
  ui.presenceRoom.textContent = room ?? "";
  if (room === null) {
    ui.presence.replaceChildren(item("join a room", "muted"));
    return;
  }
  try {
    const members = [];
    let cursor;
    do {
      const page = await client.presence(room, { cursor, limit: 100 });
      members.push(...page.members);
      cursor = page.next;
    } while (cursor !== undefined && cursor !== null && members.length < 500);
    if (room !== selected) return;
    ui.presence.replaceChildren(
      ...(members.length
        ? members.map((m) => item(`${m.user} @ ${m.node}`))
        : [item("nobody", "muted")]),
    );
    ui.presence.dataset.supported = "true";
  } catch (error) {
    if (room !== selected) return;
    const text =
      error.code === "not_supported"
        ? "not supported in this room's namespace"
        : `unavailable (${error.code})`;
    ui.presence.replaceChildren(item(text, "muted"));
    ui.presence.dataset.supported = String(error.code !== "not_supported");
  }
}

function item(text, cls = "") {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  return li;
}

async function joinRoom(room) {
  try {
    const reply = await client.join(room);
    joined.set(room, { history: typeof reply.epoch === "string" });
    system(
      typeof reply.epoch === "string"
        ? `joined ${room} (history on, at seq ${reply.seq})`
        : `joined ${room} (no history: messages sent while disconnected are not recovered)`,
    );
    select(room);
  } catch (error) {
    const why =
      error.code === "not_supported"
        ? "this gateway does not support that room's namespace settings yet"
        : error.message;
    system(`cannot join ${room}: ${why}`, "bad").dataset.error = error.code;
  }
}

async function leaveRoom(room) {
  joined.delete(room);
  if (selected === room) selected = joined.keys().next().value ?? null;
  renderRooms();
  refreshPresence();
  try {
    await client.leave(room);
    system(`left ${room}`);
  } catch (error) {
    system(`leave ${room}: ${error.message}`, "warn");
  }
}

// ---- client events ----------------------------------------------------------

client.on("state", ({ state }) => {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  if (state !== "open") ui.node.textContent = "–";
});
client.on("welcome", (welcome) => {
  ui.node.textContent = welcome.node;
  ui.node.dataset.node = welcome.node;
  ui.user.textContent = welcome.user;
  system(`connected to node ${welcome.node}`);
  refreshPresence();
});
client.on("drain", ({ after_ms }) => {
  system(`node ${client.welcome?.node ?? "?"} is draining: moving in ${after_ms} ms`, "warn");
});
client.on("reconnecting", ({ delayMs, reason }) => {
  system(`reconnecting in ${delayMs} ms (${reason})`, "warn");
});
client.on("closed", ({ code, final }) => {
  if (!final) return;
  const hint = code === 4001 ? ": this gateway requires a token (start it with --allow-anonymous)" : "";
  system(`disconnected (${code})${hint}`, "bad");
});
client.on("rejoined", ({ room, recovered, missed }) => {
  const history = joined.get(room)?.history;
  const text = !history
    ? `rejoined ${room}`
    : recovered
      ? `rejoined ${room}: recovered ${missed} missed message${missed === 1 ? "" : "s"}`
      : `rejoined ${room}: ${missed} message${missed === 1 ? "" : "s"} recovered, some may be lost`;
  const li = system(text, history && !recovered ? "warn" : "");
  li.dataset.rejoined = room;
  li.dataset.recovered = String(recovered);
});
client.on("gap", ({ room, expected, prev }) => {
  system(`gap in ${room}: expected after ${expected}, got after ${prev}; recovering`, "warn");
});
client.on("message", (message) => {
  const attributes = { room: message.room };
  if (typeof message.seq === "number") attributes.seq = String(message.seq);
  const li = line(
    message.replayed ? "message replayed" : "message",
    [
      ["room", message.room],
      ["from", message.from ?? "backend"],
      ["text", render(message.data)],
      ["seq", typeof message.seq === "number" ? `#${message.seq}` : ""],
    ],
    attributes,
  );
  li.title = JSON.stringify(message);
});
client.on("direct", (direct) => {
  line("message direct", [
    ["room", "direct"],
    ["from", direct.from ?? "backend"],
    ["text", render(direct.data)],
  ]);
});
client.on("joined", (event) => {
  if (event.room === selected) refreshPresence();
});
client.on("left", (event) => {
  if (event.conn === client.welcome?.conn) {
    joined.delete(event.room);
    if (selected === event.room) selected = joined.keys().next().value ?? null;
    renderRooms();
    system(`removed from ${event.room}${event.reason ? ` (${event.reason})` : ""}`, "warn");
  }
  if (event.room === selected) refreshPresence();
});
client.on("error", (error) => {
  system(`error: ${error.message}`, "bad");
});

// ---- forms ----------------------------------------------------------------

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const room = ui.room.value.trim();
  if (room) joinRoom(room);
});

$("publish-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (!text || selected === null) return;
  ui.text.value = "";
  try {
    await client.publish(selected, { text });
  } catch (error) {
    system(`not published: ${error.message}`, "bad");
    ui.text.value = text;
  }
});

renderRooms();
client.connect().then(
  () => joinRoom(ui.room.value.trim()),
  (error) => system(`cannot connect: ${error.message}`, "bad"),
);
