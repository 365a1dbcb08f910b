// Unit tests of trionos/static/trionos.js with Node's test runner: `node --test tests/js/`.
// The client runs against a fake WebSocket, a fake clock and fake browser objects (tests/js/fakes.mjs).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Socket, DEFAULTS, SendError, backoffDelay, socketUrl } from "../../trionos/static/trionos.js";
import { FakeClock, FakeStorage, fakeBrowser, fakeWebSocketClass } from "./fakes.mjs";

const PAGE = "http://chat.example/app/index.html";

/** A client on fakes; `random` returns 1 - tiny (the top of each back-off window) unless given. */
function make(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const browser = fakeBrowser();
  const storage = options.storage ?? new FakeStorage();
  const events = [];
  const client = new Socket(options.url ?? ".", {
    base: PAGE,
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: options.random ?? (() => 0.999),
    storage,
    ...browser,
    ...options.client,
  });
  for (const type of ["state", "welcome", "message", "joinerror", "gap"]) {
    client.on(type, (detail) => events.push({ event: type, ...detail }));
  }
  const last = () => sockets[sockets.length - 1];
  return { client, clock, sockets, last, browser, storage, events };
}

/** Open the client's socket and answer its join with a welcome at `offset` of `epoch`. */
function openAndWelcome(env, { epoch = "e1", offset = 0, users = ["ann"], recovered } = {}) {
  if (env.client.room === null) env.client.join("tea", { username: "ann" });
  const ws = env.last();
  ws.open();
  const join = ws.json.find((m) => m.type === "join");
  const welcome = { type: "welcome", users, epoch, offset, id: join.id };
  if (recovered !== undefined) welcome.recovered = recovered;
  ws.receive(welcome);
  return join;
}

const states = (events) => events.filter((e) => e.event === "state").map((e) => e.state);

test("socketUrl resolves against the page and maps the scheme", () => {
  assert.equal(socketUrl(".", "http://h:8080/chat/"), "ws://h:8080/chat/");
  assert.equal(socketUrl(".", "https://h/chat/index.html#x"), "wss://h/chat/");
  assert.equal(socketUrl("ws", "https://h/a/b"), "wss://h/a/ws");
  assert.equal(socketUrl("/socket?t=1", "http://h/a/"), "ws://h/socket?t=1");
  assert.equal(socketUrl("wss://other/x", "http://h/"), "wss://other/x");
  assert.throws(() => socketUrl(".", "file:///tmp/page.html"), TypeError);
});

test("backoffDelay is full jitter under min(maximum, initial * factor ** n)", () => {
  const b = { initial: 500, maximum: 10_000, factor: 2 };
  assert.equal(backoffDelay(0, b, () => 0.5), 250);
  assert.equal(backoffDelay(3, b, () => 0.5), 2000);
  assert.equal(backoffDelay(10, b, () => 0.5), 5000);
  assert.equal(backoffDelay(4, b, () => 0), 0);
});

test("the client connects to the URL relative to the page and emits connecting, open", () => {
  const env = make();
  env.client.connect();
  assert.equal(env.last().url, "ws://chat.example/app/");
  env.last().open();
  assert.deepEqual(states(env.events), ["connecting", "open"]);
  assert.equal(env.client.state, "open");
});

test("reconnects with growing full-jitter delays, and resets them after a stable connection", () => {
  const env = make();
  env.client.connect();
  const delays = [];
  for (let i = 0; i < 6; i++) {
    env.last().drop(1006);
    const e = env.events.at(-1);
    assert.equal(e.state, "reconnecting");
    assert.equal(e.at, env.clock.time + e.delay);
    delays.push(Math.round(e.delay));
    env.clock.tick(e.delay);
    assert.equal(env.client.state, "connecting");
  }
  assert.deepEqual(delays, [500, 999, 1998, 3996, 7992, 9990]);
  // Open, but drop before stableAfter: the schedule goes on.
  env.last().open();
  env.clock.tick(DEFAULTS.stableAfter - 1);
  env.last().drop(1006);
  assert.equal(Math.round(env.events.at(-1).delay), 9990);
  env.clock.tick(env.events.at(-1).delay);
  // Stable this time: the next delay starts again from the first step.
  env.last().open();
  env.clock.tick(DEFAULTS.stableAfter);
  env.last().drop(1001);
  assert.equal(Math.round(env.events.at(-1).delay), 500);
});

test("a close code that is not retried closes for good and rejects what waits", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env);
  env.last().drop(1006);
  const queued = env.client.send({ type: "chat", text: "later" });
  env.clock.tick(env.events.at(-1).delay);
  env.last().drop(1008, "policy");
  const closed = env.events.at(-1);
  assert.equal(closed.state, "closed");
  assert.equal(closed.code, 1008);
  await assert.rejects(queued, (e) => e instanceof SendError && e.kind === "closed");
  assert.equal(env.clock.pending, 0, "no timer is left running");
  // connect() after closed (a Retry button) starts again and re-joins the room.
  env.client.connect();
  env.last().open();
  assert.equal(env.last().json[0].type, "join");
});

test("offline pauses the reconnect; online and a visible tab retry at once", () => {
  const env = make();
  env.client.connect();
  env.last().open();
  env.browser.navigator.onLine = false;
  env.last().drop(1006);
  assert.equal(env.client.state, "offline");
  assert.equal(env.clock.pending, 0, "no retry timer while offline");
  env.browser.navigator.onLine = true;
  env.browser.window.dispatchEvent(new Event("online"));
  assert.equal(env.client.state, "connecting");
  assert.equal(env.sockets.length, 2);
  // Waiting to reconnect, then the browser goes offline: paused; the tab wakes while online: retry now.
  env.last().drop(1006);
  assert.equal(env.client.state, "reconnecting");
  env.browser.window.dispatchEvent(new Event("offline"));
  assert.equal(env.client.state, "offline");
  env.browser.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(env.client.state, "connecting");
  assert.equal(env.sockets.length, 3);
});

test("heartbeat: pings on schedule; silence after a ping means dead, replaced without waiting for a close", () => {
  const env = make();
  env.client.connect();
  const ws = env.last();
  ws.open();
  env.clock.tick(DEFAULTS.heartbeat.interval);
  assert.deepEqual(ws.sent, ["ping"]);
  ws.receive("pong");
  env.clock.tick(DEFAULTS.heartbeat.timeout * 2);
  assert.equal(env.client.state, "open", "the pong kept it alive");
  env.clock.tick(DEFAULTS.heartbeat.interval - DEFAULTS.heartbeat.timeout * 2);
  assert.deepEqual(ws.sent, ["ping", "ping"]);
  env.clock.tick(DEFAULTS.heartbeat.timeout);
  assert.equal(env.client.state, "reconnecting");
  assert.deepEqual(ws.closedWith, { code: 4000, reason: "heartbeat timeout" });
  // The old socket's late close event changes nothing.
  ws.drop(1006);
  assert.equal(states(env.events).filter((s) => s === "reconnecting").length, 1);
});

test("a tab that wakes while open probes the connection with a ping", () => {
  const env = make();
  env.client.connect();
  env.last().open();
  env.browser.document.dispatchEvent(new Event("visibilitychange"));
  assert.deepEqual(env.last().sent, ["ping"]);
  env.clock.tick(DEFAULTS.heartbeat.timeout);
  assert.equal(env.client.state, "reconnecting");
});

test("send resolves with the ack that carries its id, and rejects with the error that does", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env);
  const ws = env.last();
  const first = env.client.send({ type: "chat", text: "hi" });
  const second = env.client.send({ type: "chat", text: "spam" });
  const [a, b] = ws.json.slice(-2);
  assert.equal(a.text, "hi");
  assert.notEqual(a.id, b.id);
  ws.receive({ type: "error", reason: "too many messages: slow down", id: b.id });
  ws.receive({ type: "ack", id: a.id, offset: 7, time: 1765000000000 });
  assert.deepEqual(await first, { type: "ack", id: a.id, offset: 7, time: 1765000000000 });
  await assert.rejects(second, (e) => e.kind === "refused" && e.reason === "too many messages: slow down");
  // Replies are not also reported as messages.
  assert.equal(env.events.filter((e) => e.event === "message").length, 0);
  env.clock.tick(DEFAULTS.stableAfter);
  assert.equal(env.clock.pending, 1, "only the heartbeat is armed: no answer timer is left");
});

test("send times out without an answer", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env);
  const sent = env.client.send({ type: "chat", text: "hi" }, { timeout: 300 });
  env.clock.tick(300);
  await assert.rejects(sent, (e) => e.kind === "timeout");
  const id = env.last().json.at(-1).id;
  env.last().receive({ type: "ack", id }); // late: ignored
});

test("a message written before the connection dropped is rejected as lost", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env);
  const sent = env.client.send({ type: "chat", text: "hi" });
  env.last().drop(1006);
  await assert.rejects(sent, (e) => e.kind === "lost");
});

test("offline messages are queued, flushed in order after the rejoin's welcome, within the bounds", async () => {
  const env = make({ client: { maxQueued: 3, maxQueuedBytes: 1000 } });
  env.client.connect();
  openAndWelcome(env, { offset: 4 });
  env.last().drop(1006);
  const sends = ["one", "two", "three"].map((text) => env.client.send({ type: "chat", text }));
  await assert.rejects(env.client.send({ type: "chat", text: "four" }), (e) => e.kind === "queue-full");
  assert.equal(env.client.queued, 3);
  env.clock.tick(env.events.at(-1).delay);
  const ws = env.last();
  ws.open();
  assert.deepEqual(ws.json.map((m) => m.type), ["join"], "nothing before the room is re-joined");
  assert.deepEqual(ws.json[0].since, { epoch: "e1", offset: 4 });
  ws.receive({ type: "welcome", users: ["ann"], epoch: "e1", offset: 4, recovered: true, id: ws.json[0].id });
  assert.deepEqual(ws.json.slice(1).map((m) => m.text), ["one", "two", "three"]);
  for (const m of ws.json.slice(1)) ws.receive({ type: "ack", id: m.id, time: 1 });
  for (const s of sends) assert.equal((await s).type, "ack");
});

test("the queue's byte bound counts UTF-8 bytes of the JSON", async () => {
  const env = make({ client: { maxQueuedBytes: 100 } });
  env.client.connect();
  const ok = env.client.send({ type: "chat", text: "é".repeat(20) }); // about 70 bytes
  await assert.rejects(env.client.send({ type: "chat", text: "é".repeat(20) }), (e) => e.kind === "queue-full");
  assert.equal(env.client.queued, 1);
  env.client.close();
  await assert.rejects(ok, (e) => e.kind === "closed");
});

test("a queued message that waits longer than queueTimeout is rejected", async () => {
  const env = make({ client: { queueTimeout: 2000 } });
  env.client.connect();
  const sent = env.client.send({ type: "chat", text: "hi" });
  env.clock.tick(2000);
  await assert.rejects(sent, (e) => e.kind === "timeout");
  assert.equal(env.client.queued, 0);
});

test("join asks for history on a fresh join, since after a reconnect; duplicates are dropped", async () => {
  const env = make();
  env.client.connect();
  const joined = env.client.join("tea", { username: "ann" }, { history: 50 });
  const ws = env.last();
  ws.open();
  const join = ws.json[0];
  assert.deepEqual({ ...join, id: 0 }, { type: "join", room: "tea", username: "ann", history: 50, id: 0 });
  ws.receive({ type: "welcome", users: ["ann", "bob"], epoch: "e1", offset: 9, id: join.id });
  assert.equal((await joined).type, "welcome");
  const welcome = env.events.find((e) => e.event === "welcome");
  assert.equal(welcome.recovered, null);
  assert.equal(welcome.replay, "history");
  for (const offset of [8, 9, 10]) ws.receive({ type: "message", from: "bob", text: `m${offset}`, offset, time: 5 });
  ws.drop(1006);
  env.clock.tick(env.events.at(-1).delay);
  const again = env.last();
  again.open();
  assert.deepEqual(again.json[0].since, { epoch: "e1", offset: 10 });
  assert.equal(again.json[0].history, undefined);
  again.receive({ type: "welcome", users: ["ann", "bob"], epoch: "e1", offset: 12, recovered: true, id: again.json[0].id });
  for (const offset of [10, 11, 12, 12]) again.receive({ type: "message", from: "bob", text: `m${offset}`, offset });
  const texts = env.events.filter((e) => e.event === "message").map((e) => e.text);
  assert.deepEqual(texts, ["m8", "m9", "m10", "m11", "m12"]);
  const rejoin = env.events.filter((e) => e.event === "welcome").at(-1);
  assert.equal(rejoin.recovered, true);
  assert.equal(rejoin.rejoin, true);
  assert.deepEqual(env.client.position("tea"), { epoch: "e1", offset: 12 });
});

test("a partial recovery (new epoch) is reported and every message of the new epoch is taken", () => {
  const env = make();
  env.client.connect();
  env.client.join("tea", { username: "ann" });
  openAndWelcome(env, { epoch: "e1", offset: 30 });
  env.last().drop(1012);
  env.clock.tick(env.events.at(-1).delay);
  openAndWelcome(env, { epoch: "e2", offset: 2, recovered: false });
  env.last().receive({ type: "message", from: "bob", text: "new", offset: 1 });
  assert.equal(env.events.filter((e) => e.event === "welcome").at(-1).recovered, false);
  assert.deepEqual(env.events.at(-1), { event: "message", type: "message", from: "bob", text: "new", offset: 1 });
});

test("a live message of a new epoch is taken, not dropped as seen, and a hole before it is reported", () => {
  const env = make();
  env.client.connect();
  env.client.join("tea", { username: "ann" });
  openAndWelcome(env, { epoch: "e1", offset: 0 });
  for (let offset = 1; offset <= 3; offset++) env.last().receive({ type: "message", text: `a${offset}`, epoch: "e1", offset });
  // The room's history restarted (a Redis restart): offsets start again under a new epoch.
  env.last().receive({ type: "message", text: "b1", epoch: "e2", offset: 1 });
  env.last().receive({ type: "message", text: "b2", epoch: "e2", offset: 2 });
  env.last().receive({ type: "message", text: "b2 again", epoch: "e2", offset: 2 });
  const texts = env.events.filter((e) => e.event === "message").map((e) => e.text);
  assert.deepEqual(texts, ["a1", "a2", "a3", "b1", "b2"]);
  assert.deepEqual(env.client.position("tea"), { epoch: "e2", offset: 2 });
  assert.equal(env.events.filter((e) => e.event === "gap").length, 0);
  env.last().receive({ type: "message", text: "c5", epoch: "e3", offset: 5 }); // 1..4 of e3 never came
  assert.deepEqual(env.events.at(-2), { event: "gap", room: "tea", after: 0, next: 5, epoch: "e3", recovering: true });
  assert.equal(env.events.at(-1).text, "c5", "shown at once, not dropped");
  // The client rejoins by itself from the new epoch's start; the replay fills 1..4, once.
  const rejoin = env.last().json.at(-1);
  assert.deepEqual({ ...rejoin, id: 0 }, { type: "join", room: "tea", username: "ann", since: { epoch: "e3", offset: 0 }, id: 0 });
  assert.deepEqual(env.client.position("tea"), { epoch: "e3", offset: 0 });
  env.last().receive({ type: "welcome", users: ["ann"], epoch: "e3", offset: 5, recovered: true, id: rejoin.id });
  for (let offset = 1; offset <= 6; offset++) env.last().receive({ type: "message", text: `c${offset}`, epoch: "e3", offset });
  const after = env.events.slice(env.events.findIndex((e) => e.text === "c5") + 1);
  assert.deepEqual(after.filter((e) => e.event === "message").map((e) => e.text), ["c1", "c2", "c3", "c4", "c6"]);
  assert.deepEqual(after.filter((e) => e.event === "welcome").map(({ recovered, recovery }) => [recovered, recovery]), [[true, true]]);
  assert.deepEqual(env.client.position("tea"), { epoch: "e3", offset: 6 });
  assert.equal(env.last().json.filter((m) => m.type === "join").length, 2, "one rejoin for the gap");
});

test("a reload recovers like a reconnect: the room and its position come back from storage", () => {
  const storage = new FakeStorage();
  const before = make({ storage });
  before.client.connect();
  before.client.join("tea", { username: "ann" }, { history: 20 });
  openAndWelcome(before, { offset: 40 });
  before.last().receive({ type: "message", from: "bob", text: "m41", offset: 41 });

  // The page reloads: a new client, the same tab's storage.
  const after = make({ storage });
  assert.deepEqual(after.client.saved, { room: "tea", fields: { username: "ann" } });
  after.client.connect();
  after.client.join("tea", { username: "ann" }, { history: 20 });
  const ws = after.last();
  ws.open();
  assert.equal(ws.json[0].history, 20, "the page is empty: ask for the recent messages");
  ws.receive({ type: "welcome", users: ["ann"], epoch: "e1", offset: 45, id: ws.json[0].id });
  for (let offset = 26; offset <= 45; offset++) ws.receive({ type: "message", text: `m${offset}`, offset });
  const welcome = after.events.find((e) => e.event === "welcome");
  assert.equal(welcome.recovered, true, "the 20 recent messages reach back past offset 41");
  assert.equal(after.events.filter((e) => e.event === "message").length, 20);
  assert.equal(after.events.filter((e) => e.event === "gap").length, 0);
});

test("after a reload, a position too far back, or a hole in the replay, is reported", () => {
  const storage = new FakeStorage();
  const before = make({ storage });
  before.client.connect();
  before.client.join("tea", { username: "ann" }, { history: 5 });
  openAndWelcome(before, { offset: 40 });
  for (let offset = 36; offset <= 40; offset++) before.last().receive({ type: "message", text: "m", offset });
  assert.deepEqual(before.client.position("tea"), { epoch: "e1", offset: 40 });

  const copy = () => Object.assign(new FakeStorage(), { map: new Map(storage.map) });
  const far = make({ storage: copy() });
  far.client.connect();
  far.client.join("tea", { username: "ann" }, { history: 5 });
  openAndWelcome(far, { offset: 50 });
  assert.equal(far.events.find((e) => e.event === "welcome").recovered, false);

  const holed = make({ storage: copy() });
  holed.client.connect();
  holed.client.join("tea", { username: "ann" }, { history: 5 });
  openAndWelcome(holed, { offset: 43 }); // 41..43 should follow, but the history lost 41 (aged out)
  holed.last().receive({ type: "message", text: "m42", offset: 42 });
  assert.deepEqual(
    holed.events.filter((e) => e.event === "gap").map(({ after, next }) => [after, next]),
    [[40, 42]],
  );
});

test("a refused join rejects, emits joinerror, and forgets the room", async () => {
  const env = make();
  env.client.connect();
  const joined = env.client.join("tea", { username: "bob" });
  const ws = env.last();
  ws.open();
  ws.receive({ type: "error", reason: "username 'bob' is already taken in room 'tea'", id: ws.json[0].id });
  await assert.rejects(joined, (e) => e.kind === "refused" && /already taken/.test(e.reason));
  assert.equal(env.events.at(-1).event, "joinerror");
  assert.equal(env.client.room, null);
  ws.drop(1006);
  env.clock.tick(env.events.at(-1).delay);
  env.last().open();
  assert.deepEqual(env.last().json, [], "no re-join of a refused room");
});

test("leave tells the server, forgets the position, and the next join of the room starts fresh", async () => {
  const env = make();
  env.client.connect();
  env.client.join("tea", { username: "ann" }, { history: 10 });
  openAndWelcome(env, { offset: 3 });
  const ws = env.last();
  const left = env.client.leave();
  const leave = ws.json.at(-1);
  assert.equal(leave.type, "leave");
  ws.receive({ type: "left", username: "ann", id: leave.id });
  assert.equal((await left).type, "left");
  assert.equal(env.client.position("tea"), null);
  assert.equal(env.events.filter((e) => e.event === "message").length, 0, "the reply is not a message event");
  env.client.join("tea", { username: "ann" }, { history: 10 });
  assert.equal(ws.json.at(-1).history, 10);
  assert.equal(ws.json.at(-1).since, undefined);
});

test("switching rooms rejects the messages queued for the old room", async () => {
  const env = make();
  env.client.connect();
  const tea = env.client.join("tea", { username: "ann" });
  const queued = env.client.send({ type: "chat", text: "for tea" });
  env.client.join("coffee", { username: "ann" });
  await assert.rejects(queued, (e) => e.kind === "closed");
  await assert.rejects(tea, (e) => e.kind === "closed");
  env.last().open();
  assert.deepEqual(env.last().json.map((m) => m.room), ["coffee"]);
});

test("unsolicited server messages and errors without an id are events; pongs and bad JSON are not", () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env);
  env.last().receive("pong");
  env.last().receive("not json");
  env.last().receive("[1, 2]");
  env.last().receive({ type: "joined", username: "bob" });
  env.last().receive({ type: "error", reason: "slow down" });
  env.last().receive({ type: "ack", id: 999 }); // answers nothing pending: reported as it is
  assert.deepEqual(
    env.events.filter((e) => e.event === "message"),
    [
      { event: "message", type: "joined", username: "bob" },
      { event: "message", type: "error", reason: "slow down" },
      { event: "message", type: "ack", id: 999 },
    ],
  );
});

test("room traffic before the welcome (from the room being left) is not delivered", () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env, { offset: 5 });
  env.client.join("coffee", { username: "ann" });
  const ws = env.last();
  ws.receive({ type: "message", from: "bob", text: "still tea", offset: 6 });
  ws.receive({ type: "left", username: "bob" });
  ws.receive({ type: "welcome", users: ["ann"], epoch: "c1", offset: 0, id: ws.json.at(-1).id });
  ws.receive({ type: "message", from: "cy", text: "coffee", offset: 1 });
  assert.deepEqual(
    env.events.filter((e) => e.event === "message").map((e) => e.text),
    ["coffee"],
  );
});

test("close is idempotent and stops every timer; connect while offline tries at once", () => {
  const env = make();
  env.client.connect();
  env.last().open();
  env.client.close();
  env.client.close();
  assert.deepEqual(states(env.events), ["connecting", "open", "closed"]);
  assert.deepEqual(env.last().closedWith, { code: 1000, reason: "" });
  assert.equal(env.clock.pending, 0);
  env.client.connect();
  env.browser.navigator.onLine = false;
  env.last().drop(1006);
  assert.equal(env.client.state, "offline");
  env.client.connect(); // a Retry button: try anyway
  assert.equal(env.client.state, "connecting");
});

test("without a heartbeat no ping is sent and a quiet connection stays", () => {
  const env = make({ client: { heartbeat: null } });
  env.client.connect();
  env.last().open();
  env.clock.tick(DEFAULTS.heartbeat.interval * 10);
  env.browser.document.dispatchEvent(new Event("visibilitychange"));
  assert.deepEqual(env.last().sent, []);
  assert.equal(env.client.state, "open");
});

test("without storage (switched off) the client works and forgets on reload", () => {
  const env = make({ client: { storage: null } });
  env.client.connect();
  openAndWelcome(env, { offset: 2 });
  assert.deepEqual(env.client.position("tea"), { epoch: "e1", offset: 2 });
  const again = make({ client: { storage: null } });
  assert.equal(again.client.saved, null);
});

test("a storage that throws (quota, privacy settings) is survived", () => {
  const broken = { getItem() { throw new Error("SecurityError"); }, setItem() { throw new Error("QuotaExceeded"); } };
  const env = make({ storage: broken });
  env.client.connect();
  openAndWelcome(env, { offset: 2 });
  assert.equal(env.client.joined, true);
});

test("own acknowledged messages move the position once everything before them arrived", () => {
  const storage = new FakeStorage();
  const env = make({ storage });
  env.client.connect();
  openAndWelcome(env, { offset: 3 });
  const ws = env.last();
  env.client.send({ type: "chat", text: "mine" }).catch(() => {});
  const mine = ws.json.at(-1);
  // Our message got offset 5, and its ack overtook bob's message at 4.
  ws.receive({ type: "ack", id: mine.id, offset: 5, time: 1 });
  assert.deepEqual(env.client.position("tea"), { epoch: "e1", offset: 3 });
  ws.receive({ type: "message", from: "bob", text: "four", offset: 4 });
  assert.deepEqual(env.client.position("tea"), { epoch: "e1", offset: 5 });
  // A reload: the recent history (the server skips our own message) shows no false gap.
  const after = make({ storage });
  after.client.connect();
  after.client.join("tea", { username: "ann" }, { history: 10 });
  const again = after.last();
  again.open();
  again.receive({ type: "welcome", users: ["ann"], epoch: "e1", offset: 6, id: again.json[0].id });
  for (const offset of [4, 6]) again.receive({ type: "message", from: "bob", text: `m${offset}`, offset });
  assert.equal(after.events.find((e) => e.event === "welcome").recovered, true);
  assert.deepEqual(after.events.filter((e) => e.event === "gap"), []);
});

/** The chat messages the client delivered, as their texts. */
const shown = (env) => env.events.filter((e) => e.event === "message" && e.type === "message").map((e) => e.text);
const joins = (ws) => ws.json.filter((m) => m.type === "join");
const say = (ws, offset, epoch = "e1") => ws.receive({ type: "message", from: "bob", text: `m${offset}`, epoch, offset });

test("a skipped live offset: the client rejoins since the last unbroken position, and shows the missed message once", () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env, { offset: 2 });
  const ws = env.last();
  say(ws, 3);
  say(ws, 5); // 4 was lost on its way (a dropped subscription)
  const gap = env.events.find((e) => e.event === "gap");
  assert.deepEqual(gap, { event: "gap", room: "tea", after: 3, next: 5, recovering: true });
  const rejoin = joins(ws).at(-1);
  assert.deepEqual(rejoin.since, { epoch: "e1", offset: 3 });
  assert.equal(rejoin.username, "ann", "the join's fields are sent again");
  say(ws, 6); // live traffic before the welcome: shown, and no second rejoin
  assert.equal(joins(ws).length, 2);
  assert.equal(env.client.joined, true, "still in the room while recovering");
  ws.receive({ type: "welcome", users: ["ann", "bob"], epoch: "e1", offset: 6, recovered: true, id: rejoin.id });
  for (const offset of [4, 5, 6, 7]) say(ws, offset); // the replay (4, 5, 6), then live (7)
  assert.deepEqual(shown(env), ["m3", "m5", "m6", "m4", "m7"]);
  const welcome = env.events.filter((e) => e.event === "welcome").at(-1);
  assert.deepEqual([welcome.recovered, welcome.recovery, welcome.rejoin], [true, true, true]);
  assert.deepEqual(env.client.position("tea"), { epoch: "e1", offset: 7 });
  assert.equal(env.events.filter((e) => e.event === "gap").length, 1);
  assert.equal(joins(ws).length, 2);
});

test("a gap that an own message's late ack fills is no gap: nothing is reported, no rejoin", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env, { offset: 2 });
  const ws = env.last();
  const sent = env.client.send({ type: "chat", text: "mine" });
  say(ws, 4); // bob's message overtook the ack of ours, which got offset 3
  assert.equal(env.events.filter((e) => e.event === "gap").length, 0, "waits for the ack");
  ws.receive({ type: "ack", id: ws.json.at(-1).id, offset: 3, time: 1 });
  await sent;
  assert.equal(env.events.filter((e) => e.event === "gap").length, 0);
  assert.equal(joins(ws).length, 1);
  assert.deepEqual(env.client.position("tea"), { epoch: "e1", offset: 4 });
});

test("an ack that fills one hole of two: the gap reported is the one left", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env, { offset: 2 });
  const ws = env.last();
  const sent = env.client.send({ type: "chat", text: "mine" });
  say(ws, 4); // before the ack of ours (3)
  say(ws, 6); // 5 was lost
  ws.receive({ type: "ack", id: ws.json.at(-1).id, offset: 3, time: 1 });
  await sent;
  assert.deepEqual(env.events.filter((e) => e.event === "gap"), [{ event: "gap", room: "tea", after: 4, next: 6, recovering: true }]);
  assert.deepEqual(joins(ws).at(-1).since, { epoch: "e1", offset: 4 });
});

test("a gap the ack does not fill is recovered once the ack (or its timeout) is in", async () => {
  const env = make({ client: { ackTimeout: 1000 } });
  env.client.connect();
  openAndWelcome(env, { offset: 2 });
  const ws = env.last();
  const first = env.client.send({ type: "chat", text: "one" });
  say(ws, 5);
  ws.receive({ type: "ack", id: ws.json.at(-1).id, offset: 3, time: 1 });
  await first;
  assert.deepEqual(env.events.find((e) => e.event === "gap"), { event: "gap", room: "tea", after: 3, next: 5, recovering: true });
  assert.deepEqual(joins(ws).at(-1).since, { epoch: "e1", offset: 3 });
  ws.receive({ type: "welcome", users: ["ann"], epoch: "e1", offset: 5, recovered: true, id: joins(ws).at(-1).id });
  // Another gap while a message waits for an ack that never comes: reported after its timeout.
  const second = env.client.send({ type: "chat", text: "two" });
  for (const offset of [4, 5, 6, 8]) say(ws, offset);
  assert.equal(env.events.filter((e) => e.event === "gap").length, 1);
  env.clock.tick(1000);
  await assert.rejects(second, (e) => e.kind === "timeout");
  assert.deepEqual(env.events.filter((e) => e.event === "gap").at(-1), { event: "gap", room: "tea", after: 6, next: 8, recovering: true });
  assert.deepEqual(joins(ws).at(-1).since, { epoch: "e1", offset: 6 });
  assert.deepEqual(shown(env), ["m5", "m4", "m6", "m8"]);
});

test("recoverGaps: false reports the gap without rejoining", () => {
  const env = make({ client: { recoverGaps: false } });
  env.client.connect();
  openAndWelcome(env, { offset: 0 });
  say(env.last(), 1);
  say(env.last(), 3);
  say(env.last(), 4); // beyond the same gap: not reported again
  assert.deepEqual(env.events.filter((e) => e.event === "gap"), [{ event: "gap", room: "tea", after: 1, next: 3, recovering: false }]);
  assert.deepEqual(shown(env), ["m1", "m3", "m4"]);
  assert.equal(joins(env.last()).length, 1);
  // The next reconnect asks since the last unbroken position, so the server replays the hole.
  env.last().drop(1006);
  env.clock.tick(env.events.at(-1).delay);
  env.last().open();
  assert.deepEqual(joins(env.last())[0].since, { epoch: "e1", offset: 1 });
});

test("an epoch change while connected: the new epoch's messages are shown, and a reconnect replays none twice", () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env, { offset: 0 });
  for (const offset of [1, 2, 3]) say(env.last(), offset);
  // The room's history was evicted: offsets start again from 1 under a new epoch, nothing missed.
  for (const offset of [1, 2]) say(env.last(), offset, "e2");
  assert.deepEqual(shown(env), ["m1", "m2", "m3", "m1", "m2"]);
  assert.equal(env.events.filter((e) => e.event === "gap").length, 0);
  assert.equal(joins(env.last()).length, 1, "no rejoin: nothing is missing");
  env.last().drop(1006);
  env.clock.tick(env.events.at(-1).delay);
  const again = env.last();
  again.open();
  assert.deepEqual(joins(again)[0].since, { epoch: "e2", offset: 2 });
  again.receive({ type: "welcome", users: ["ann"], epoch: "e2", offset: 2, recovered: true, id: joins(again)[0].id });
  say(again, 3, "e2");
  assert.deepEqual(shown(env), ["m1", "m2", "m3", "m1", "m2", "m3"]);
});

test("a refused recovery join keeps the room: joinerror says it was a recovery", async () => {
  const env = make();
  env.client.connect();
  openAndWelcome(env, { offset: 0 });
  const ws = env.last();
  say(ws, 2);
  ws.receive({ type: "error", reason: "too many messages: slow down", id: joins(ws).at(-1).id });
  const error = env.events.filter((e) => e.event === "joinerror").at(-1);
  assert.deepEqual([error.reason, error.recovery, error.rejoin], ["too many messages: slow down", true, true]);
  assert.equal(env.client.room, "tea");
  assert.equal(env.client.joined, true);
  const sent = env.client.send({ type: "chat", text: "still here" });
  ws.receive({ type: "ack", id: ws.json.at(-1).id, offset: 3, time: 1 });
  assert.equal((await sent).type, "ack");
});

test("after a gap, the stored position stays before it, so a reload asks for the missed message too", () => {
  const storage = new FakeStorage();
  const env = make({ storage, client: { recoverGaps: false } });
  env.client.connect();
  openAndWelcome(env, { offset: 4 });
  say(env.last(), 6);
  const after = make({ storage });
  assert.deepEqual(after.client.position("tea"), { epoch: "e1", offset: 4 });
});
