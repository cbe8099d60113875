// The wsgate demo page: rooms, messages, presence, join/leave events and the
// node this page is connected to, using nothing but the reference client.
//
// A reload resumes where the page was: the rooms it was in and the position
// ({epoch, seq}) of the last message it saw are kept in sessionStorage (this
// tab only), and the page rejoins with `since`, so what was published while it
// reloaded is recovered from the room's history.
import { WsgateClient } from "/client/wsgate.js";

/** The room a fresh page joins; its namespace has history and presence under `--demo`. */
const DEFAULT_ROOM = "demo:lobby";
/** The sessionStorage key of what survives a reload. */
const SAVED = "wsgate-demo";

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
ui.room.value = params.get("room") || DEFAULT_ROOM;

const client = new WsgateClient({ url: urls });
const joined = new Map(); // room -> {history: bool}
let selected = null;
let presenceRequest = 0; // only the latest presence answer is shown

// Exposed for curious users and for the browser test.
window.wsgateDemo = { client, urls, joined };

// ---- what survives a reload -------------------------------------------------

/** The rooms and selection saved before the last reload, or null. */
function loadSaved() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SAVED) ?? "null");
    return saved && Array.isArray(saved.rooms) ? saved : null;
  } catch {
    return null; // storage disabled or garbled: start afresh
  }
}

/** Saves the joined rooms, each with the position of the last message seen. */
function save() {
  const rooms = [...joined.keys()].map((room) => {
    const position = client.rooms.get(room);
    return { room, epoch: position?.epoch ?? null, seq: position?.seq ?? null };
  });
  try {
    sessionStorage.setItem(SAVED, JSON.stringify({ rooms, selected }));
  } catch {
    // storage disabled: a reload starts afresh
  }
}

// ---- rendering --------------------------------------------------------------

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

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
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
    const name = document.createElement("button");
    name.type = "button";
    name.className = "name";
    name.textContent = room;
    name.addEventListener("click", () => select(room));
    const leave = document.createElement("button");
    leave.type = "button";
    leave.className = "leave";
    leave.title = `leave ${room}`;
    leave.setAttribute("aria-label", `leave ${room}`);
    leave.textContent = "×";
    leave.addEventListener("click", () => leaveRoom(room));
    li.append(name, leave);
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
  save();
}

function item(text, cls = "") {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  return li;
}

/** Asks for the selected room's members; called on every joined/left event, so the list is live. */
async function refreshPresence() {
  const room = selected;
  const request = ++presenceRequest;
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
    if (request !== presenceRequest) return;
    const me = client.welcome?.conn;
    ui.presence.replaceChildren(
      ...(members.length
        ? members.map((m) => {
            const li = item(`${m.user} @ ${m.node}${m.conn === me ? " (you)" : ""}`);
            li.dataset.conn = m.conn;
            li.dataset.user = m.user;
            return li;
          })
        : [item("nobody", "muted")]),
    );
    ui.presence.dataset.supported = "true";
  } catch (error) {
    if (request !== presenceRequest) return;
    const text =
      error.code === "not_supported"
        ? "not kept in this room's namespace"
        : `unavailable (${error.code})`;
    ui.presence.replaceChildren(item(text, "muted"));
    ui.presence.dataset.supported = String(error.code !== "not_supported");
  }
}

// ---- rooms ------------------------------------------------------------------

/** Joins `room`; with `since` (after a reload), recovers what was published meanwhile. */
async function joinRoom(room, since) {
  try {
    const reply = await client.join(room, since ? { since } : {});
    const history = typeof reply.epoch === "string";
    joined.set(room, { history });
    if (since) {
      resumed(room, since, reply);
    } else {
      system(
        history
          ? `joined ${room} (history on, at seq ${reply.seq}: reload this page and it recovers what it missed)`
          : `joined ${room} (no history in this namespace: messages sent while away are not recovered)`,
      );
    }
    if (selected === null) selected = room;
    renderRooms();
    save();
    return true;
  } catch (error) {
    const why =
      error.code === "not_supported"
        ? "this gateway does not support that room's namespace settings"
        : error.message;
    system(`cannot join ${room}: ${why}`, "bad").dataset.error = error.code;
    return false;
  }
}

/** Says how the rejoin after a reload went. */
function resumed(room, since, reply) {
  const missed = Array.isArray(reply.missed) ? reply.missed.length : 0;
  let text;
  let level = "";
  if (reply.recovered === true) {
    text = `back in ${room} after the reload: recovered ${plural(missed, "missed message")}`;
  } else if (typeof reply.epoch !== "string") {
    text = `back in ${room} after the reload (no history: what was sent meanwhile is not recovered)`;
  } else if (reply.epoch !== since.epoch) {
    text = `back in ${room} after the reload: its history was reset (the server restarted?), what was sent meanwhile is lost`;
    level = "warn";
  } else {
    text = `back in ${room} after the reload: recovered ${plural(missed, "message")}, some may be lost`;
    level = "warn";
  }
  const li = system(text, level);
  li.dataset.rejoined = room;
  li.dataset.recovered = String(reply.recovered === true);
  li.dataset.reason = "reload";
}

async function leaveRoom(room) {
  joined.delete(room);
  if (selected === room) selected = joined.keys().next().value ?? null;
  renderRooms();
  refreshPresence();
  save();
  try {
    await client.leave(room);
    system(`left ${room}`);
  } catch (error) {
    system(`leave ${room}: ${error.message}`, "warn");
  }
}

/** A line for another connection's `joined` or `left` event. */
function membership(event, verb) {
  const reason = event.reason ? ` (${event.reason})` : "";
  line(
    `system member ${verb}`,
    [
      ["from", event.user],
      ["text", `${verb} ${event.room}${reason}`],
    ],
    { event: verb, room: event.room, user: event.user, conn: event.conn },
  );
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
      ? `rejoined ${room}: recovered ${plural(missed, "missed message")}`
      : `rejoined ${room}: ${plural(missed, "message")} recovered, some may be lost`;
  const li = system(text, history && !recovered ? "warn" : "");
  li.dataset.rejoined = room;
  li.dataset.recovered = String(recovered);
  save();
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
  if (typeof message.seq === "number" && joined.has(message.room)) save();
});
client.on("direct", (direct) => {
  line("message direct", [
    ["room", "direct"],
    ["from", direct.from ?? "backend"],
    ["text", render(direct.data)],
  ]);
});
client.on("joined", (event) => {
  if (event.conn !== client.welcome?.conn) membership(event, "joined");
  if (event.room === selected) refreshPresence();
});
client.on("left", (event) => {
  if (event.conn === client.welcome?.conn) {
    joined.delete(event.room);
    if (selected === event.room) selected = joined.keys().next().value ?? null;
    renderRooms();
    save();
    system(`removed from ${event.room}${event.reason ? ` (${event.reason})` : ""}`, "warn");
  } else {
    membership(event, "left");
  }
  if (event.room === selected) refreshPresence();
});
client.on("error", (error) => {
  system(`error: ${error.message}`, "bad");
});

// ---- forms ------------------------------------------------------------------

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const room = ui.room.value.trim();
  if (room && (await joinRoom(room))) select(room);
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

// ---- start ------------------------------------------------------------------

/** The rooms to join: those of before the reload (with their positions), else the first room. */
function roomsToJoin() {
  const first = { room: ui.room.value.trim() };
  const saved = loadSaved();
  if (!saved) return { rooms: [first], selected: null };
  const rooms = saved.rooms.filter((r) => typeof r?.room === "string");
  // A room named in the address is joined even if it was left before the reload.
  if (params.get("room") && !rooms.some((r) => r.room === first.room)) rooms.push(first);
  return { rooms, selected: typeof saved.selected === "string" ? saved.selected : null };
}

async function start() {
  const { rooms, selected: wasSelected } = roomsToJoin();
  for (const { room, epoch, seq } of rooms) {
    const since = typeof epoch === "string" && typeof seq === "number" ? { epoch, seq } : undefined;
    await joinRoom(room, since);
  }
  select(joined.has(wasSelected) ? wasSelected : (joined.keys().next().value ?? null));
}

renderRooms();
client.connect().then(start, (error) => system(`cannot connect: ${error.message}`, "bad"));
