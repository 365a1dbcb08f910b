// trionos.js: the browser client for the trionos room chat protocol (trionos.chat).
//
// One dependency-free ES module, shipped inside the Python package (trionos/static/) and served by
// trionos.respond_client / Request.respond_client. Types: trionos.d.ts beside it, and the JSDoc here.
//
// What it does, the browser way, as the Python client does with run_reconnecting and Positions:
// * the socket URL is resolved against the page (any path prefix; ws: or wss: from the page's scheme);
// * reconnects with exponential back-off and full jitter, reset once a connection stayed up for
//   `stableAfter` ms; paused while the browser is offline, retried at once when it comes back online or
//   the tab becomes visible again;
// * a text "ping" every `heartbeat.interval` ms (the server answers "pong"); a connection that then
//   stays silent for `heartbeat.timeout` ms is declared dead and replaced;
// * the room's position (epoch + offset) kept in sessionStorage, so that a reconnect asks for what it
//   missed ("since") and a reload recovers as a reconnect does (recent history, and a gap check);
// * send(message) tags the message with an id and returns a promise settled by the server's "ack" or
//   "error" carrying that id, or by a timeout; while the connection is down (or the room not yet
//   re-joined) messages wait in a queue bounded in count and bytes, flushed in order after the rejoin;
// * events a page can render: "state" (connecting, open, reconnecting in N ms, offline, closed),
//   "welcome", "message", "joinerror", "gap".
//
// It never touches the DOM: a page renders what the events say (with textContent, not innerHTML).

/** Close codes after which the client reconnects (as trionos.RETRY_CLOSE_CODES, plus what browsers
 * report for a connection that never opened or ended without a close frame: 1005, 1006, 1015). */
export const RETRY_CLOSE_CODES = Object.freeze([1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015]);

/** The defaults of every option (milliseconds, counts and bytes). */
export const DEFAULTS = Object.freeze({
  backoff: Object.freeze({ initial: 500, maximum: 10_000, factor: 2 }),
  stableAfter: 5_000,
  heartbeat: Object.freeze({ interval: 25_000, timeout: 10_000 }),
  ackTimeout: 10_000,
  queueTimeout: 60_000,
  maxQueued: 100,
  maxQueuedBytes: 64 * 1024,
});

/**
 * Why a send, join or leave failed: `kind` says which way.
 *
 * - "refused": the server answered with an error (`reason` is its reason, `reply` the message);
 * - "timeout": no answer within the ack timeout (or the queue timeout while waiting to be sent);
 * - "lost": the connection dropped after the message was written, before an answer: it may or may
 *   not have been acted on;
 * - "queue-full": the offline queue is at its bound (count or bytes);
 * - "closed": the client was closed for good, or the room was left, before the message was sent.
 */
export class SendError extends Error {
  /**
   * @param {"refused"|"timeout"|"lost"|"queue-full"|"closed"} kind
   * @param {string} reason
   * @param {object|null} [reply]
   */
  constructor(kind, reason, reply = null) {
    super(reason);
    this.name = "SendError";
    /** @type {"refused"|"timeout"|"lost"|"queue-full"|"closed"} */
    this.kind = kind;
    /** @type {string} */
    this.reason = reason;
    /** @type {object|null} */
    this.reply = reply;
  }
}

/**
 * The WebSocket URL for `url` relative to the page: `socketUrl(".", "https://example.com/chat/")`
 * is `wss://example.com/chat/`. http: becomes ws:, https: becomes wss:; ws: and wss: stay.
 *
 * @param {string} [url] relative or absolute; "." (the default) is the page's own directory
 * @param {string} [base] the page's address (default: location.href)
 * @returns {string}
 */
export function socketUrl(url = ".", base = globalThis.location?.href) {
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  else if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
    throw new TypeError(`a WebSocket needs an http(s) or ws(s) URL, got ${JSON.stringify(resolved.href)}`);
  }
  resolved.hash = "";
  return resolved.href;
}

/**
 * The back-off before reconnect attempt `attempt` (0 for the first since the last reset): full
 * jitter, uniform in [0, min(maximum, initial * factor ** attempt)).
 *
 * @param {number} attempt
 * @param {{initial: number, maximum: number, factor: number}} backoff
 * @param {() => number} random a number in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, backoff, random) {
  return random() * Math.min(backoff.maximum, backoff.initial * backoff.factor ** attempt);
}

/** @typedef {import("./trionos").SendErrorKind} SendErrorKind */
/** @typedef {import("./trionos").ServerMessage} ServerMessage */
/** @typedef {{resolve: (value: any) => void, reject: (error: SendError) => void}} Waiter */
/**
 * A message on its way: queued, or written and waiting for the answer that carries its id.
 * @typedef {{id: number, text: string, bytes: number, resolve: (value: any) => void,
 *   reject: (error: SendError) => void, queueable: boolean, answers: string[], timeout: number,
 *   timer: unknown, ws: WebSocket|null, room: string|null}} Entry
 */
/**
 * The room this client is in or joining.
 * @typedef {{name: string, fields: Record<string, unknown>, history: number, joined: boolean,
 *   request: number|null, resume: boolean, waiters: Waiter[], replay: "since"|"history"|null,
 *   rejoin: boolean, everJoined: boolean}} RoomState
 */
/** @typedef {"retry"|"stable"|"ping"|"dead"} TimerName */

/** What a room sends its members: delivered only while this client is in the room. */
const ROOM_TRAFFIC = new Set(["message", "joined", "left"]);

const encoder = new TextEncoder();
const utf8Length = (/** @type {string} */ text) => encoder.encode(text).length;

function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage switched off (privacy settings, sandboxed frame)
  }
}

/**
 * A connection to a trionos chat server that stays up: see the module comment.
 *
 * @extends EventTarget
 */
export class Socket extends EventTarget {
  /**
   * @param {string} [url] the socket URL, relative to the page ("." by default: the page's directory)
   * @param {import("./trionos").SocketOptions} [options]
   */
  constructor(url = ".", options = {}) {
    super();
    const o = options;
    /** The absolute WebSocket URL. */
    this.url = socketUrl(url, o.base);
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this._backoff = { ...DEFAULTS.backoff, ...o.backoff };
    this._stableAfter = o.stableAfter ?? DEFAULTS.stableAfter;
    this._heartbeat = o.heartbeat === null ? null : { ...DEFAULTS.heartbeat, ...o.heartbeat };
    this._ackTimeout = o.ackTimeout ?? DEFAULTS.ackTimeout;
    this._queueTimeout = o.queueTimeout ?? DEFAULTS.queueTimeout;
    this._maxQueued = o.maxQueued ?? DEFAULTS.maxQueued;
    this._maxQueuedBytes = o.maxQueuedBytes ?? DEFAULTS.maxQueuedBytes;
    this._retryOn = new Set(o.retryOn ?? RETRY_CLOSE_CODES);
    this._random = o.random ?? Math.random;
    /** @type {(fn: () => void, ms: number) => unknown} */
    this._setTimeout = o.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    /** @type {(timer: any) => void} */
    this._clearTimeout = o.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this._now = o.now ?? Date.now;
    this._storage = o.storage === undefined ? defaultStorage() : o.storage;
    this._storageKey = "trionos:" + this.url;
    this._window = o.window === undefined ? globalThis.window ?? null : o.window;
    this._navigator = o.navigator === undefined ? globalThis.navigator ?? null : o.navigator;
    this._document = o.document === undefined ? globalThis.document ?? null : o.document;

    /** @type {import("./trionos").State} */
    this._state = "idle";
    /** @type {WebSocket|null} */
    this._ws = null;
    this._attempt = 0;
    /** @type {Record<TimerName, unknown>} */
    this._timers = { retry: null, stable: null, ping: null, dead: null };
    this._nextId = 1;
    /** @type {Map<number|string, Entry>} Requests written and waiting for their answer, by id. */
    this._pending = new Map();
    /** @type {Entry[]} Messages waiting for the connection (and the room) to be ready, in order. */
    this._queue = [];
    this._queuedBytes = 0;
    /** @type {RoomState|null} */
    this._room = null;
    /** @type {Record<string, {epoch: string, offset: number}>} Per room: the last message seen. */
    this._positions = {};
    /** @type {{room: string, after: number}|null} After a reload whose welcome looked complete. */
    this._gapCheck = null;
    /** @type {Set<number>} Offsets of our own acknowledged messages beyond the position (see _own). */
    this._ownAhead = new Set();
    const saved = this._load();
    this._positions = saved.positions;
    /** The room and fields stored by this tab before a reload ({room, fields}), or null. */
    this.saved = saved.room;

    this._onOnline = () => this._wake(true);
    this._onOffline = () => this._pause();
    this._onVisible = () => {
      if (this._document?.visibilityState === "visible") this._wake(false);
    };
  }

  /** The connection's state: "idle", "connecting", "open", "reconnecting", "offline" or "closed". */
  get state() {
    return this._state;
  }

  /** The room joined (or being joined), or null. */
  get room() {
    return this._room === null ? null : this._room.name;
  }

  /** True once the server welcomed this connection into the room. */
  get joined() {
    return this._room !== null && this._room.joined;
  }

  /** How many messages wait in the offline queue. */
  get queued() {
    return this._queue.length;
  }

  /**
   * The position of the last message seen in `room`, or null.
   * @param {string} room
   * @returns {{epoch: string, offset: number}|null}
   */
  position(room) {
    const p = this._positions[room];
    return p === undefined ? null : { ...p };
  }

  /**
   * Listen to an event; returns a function that removes the listener.
   * @param {string} type "state", "welcome", "message", "joinerror" or "gap"
   * @param {(detail: any) => void} listener called with the event's detail
   * @returns {() => void}
   */
  on(type, listener) {
    const handler = (/** @type {Event} */ event) => listener(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /**
   * Open the connection now: the first time, to retry at once while waiting to reconnect (a Retry
   * button), or to start again after "closed". Does nothing while connecting or open.
   */
  connect() {
    if (this._state === "connecting" || this._state === "open") return;
    if (this._state === "idle" || this._state === "closed") this._listen(true);
    this._open();
  }

  /**
   * Close for good: no more reconnects; queued and unanswered messages are rejected ("closed").
   * The stored room and position stay, so that a reload still recovers.
   * @param {number} [code] 1000 or 3000-4999
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    if (this._state === "closed") return;
    const ws = this._detach();
    if (ws !== null) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    this._clear("retry");
    this._listen(false);
    this._failAll("closed", "the client was closed");
    if (this._room !== null) this._room.joined = false;
    this._setState("closed", { code, reason, willRetry: false });
  }

  /**
   * Join `room` (leaving the one this client is in, as the chat protocol does). The client re-joins
   * after every reconnect, with "since" its last position, until leave() or another join().
   *
   * @param {string} room
   * @param {Record<string, unknown>} [fields] more fields of the join message, e.g. {username: "ann"}
   * @param {{history?: number}} [options] history: how many recent messages to ask for on a fresh
   *   join (0: none); after a reload, the recent messages come with a check that nothing is missing
   * @returns {Promise<object>} the welcome; rejected with a SendError ("refused": the server's reason)
   */
  join(room, fields = {}, options = {}) {
    const history = options.history ?? 0;
    const stored = this._positions[room];
    // A position stored for the room this tab was in before a reload: recover as a reconnect does.
    const resume = this._room === null && stored !== undefined && this.saved?.room === room;
    if (this._room !== null) this._forgetRoom("closed", "joined another room");
    if (!resume) delete this._positions[room];
    this.saved = null;
    /** @type {RoomState} */
    const state = {
      name: room,
      fields: { ...fields },
      history,
      joined: false,
      request: null,
      resume,
      waiters: [],
      replay: null,
      rejoin: false,
      everJoined: false,
    };
    this._room = state;
    this._save();
    const done = new Promise((resolve, reject) => state.waiters.push({ resolve, reject }));
    if (this._isOpen()) this._sendJoin();
    return done;
  }

  /**
   * Leave the room: the server is told when connected; the stored position is forgotten, and
   * queued messages are rejected ("closed").
   * @returns {Promise<object|null>} the server's "left" (null when not connected)
   */
  leave() {
    if (this._room === null) return Promise.resolve(null);
    const wasJoined = this._room.joined;
    this._forgetRoom("closed", "left the room");
    if (!wasJoined || !this._isOpen()) return Promise.resolve(null);
    return this._request({ type: "leave" }, { queue: false, timeout: undefined, answers: ["left", "error"] });
  }

  /**
   * Send `message` (an object with a "type", e.g. {type: "chat", text: "hi"}), tagged with a new
   * "id". Waits in the queue while the connection or the room is not ready.
   *
   * @param {Record<string, unknown>} message
   * @param {{timeout?: number}} [options] timeout: ms to wait for the answer once written
   * @returns {Promise<object>} the server's answer ("ack"); rejected with a SendError
   */
  send(message, options = {}) {
    return this._request(message, { queue: true, timeout: options.timeout });
  }

  // -- the connection ---------------------------------------------------------------------------

  _open() {
    this._clear("retry");
    this._setState("connecting", { attempt: this._attempt });
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (error) {
      this._closed(1006, String(error));
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._setState("open", {});
      this._arm("stable", this._stableAfter, () => {
        this._attempt = 0; // a stable connection: the next failure starts the schedule again
      });
      this._schedulePing();
      if (this._room !== null) this._sendJoin();
      else this._flush();
    };
    ws.onmessage = (/** @type {MessageEvent} */ event) => {
      if (this._ws === ws) this._receive(event.data);
    };
    ws.onclose = (/** @type {CloseEvent} */ event) => {
      if (this._ws === ws) this._closed(event.code, event.reason);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  _isOpen() {
    return this._ws !== null && this._ws.readyState === 1 && this._state === "open";
  }

  /** Stop listening to the current socket and its timers; returns it (or null). */
  _detach() {
    const ws = this._ws;
    this._ws = null;
    for (const name of /** @type {TimerName[]} */ (["stable", "ping", "dead"])) this._clear(name);
    if (ws !== null) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  /**
   * The socket ended (or never opened, or was declared dead): reconnect, or close for good.
   * @param {number} code
   * @param {string} reason
   */
  _closed(code, reason) {
    this._detach();
    if (this._room !== null) this._room.joined = false;
    // Written but unanswered: the server may or may not have acted on them.
    for (const [id, entry] of this._pending) {
      if (entry.queueable) {
        this._pending.delete(id);
        this._clearTimer(entry.timer);
        entry.reject(new SendError("lost", "the connection dropped before the server answered"));
      }
    }
    if (!this._retryOn.has(code)) {
      this._listen(false);
      this._failAll("closed", `the server closed the connection (${code}${reason ? ": " + reason : ""})`);
      this._setState("closed", { code, reason, willRetry: false });
      return;
    }
    this._scheduleReconnect(code, reason);
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  _scheduleReconnect(code, reason) {
    if (this._navigator?.onLine === false) {
      this._setState("offline", { code, reason });
      return;
    }
    const delay = backoffDelay(this._attempt, this._backoff, this._random);
    this._attempt += 1;
    this._setState("reconnecting", { delay, at: this._now() + delay, attempt: this._attempt, code, reason });
    this._arm("retry", delay, () => this._open());
  }

  /**
   * The browser came back online (`online`), or the tab became visible.
   * @param {boolean} online
   */
  _wake(online) {
    if (this._state === "reconnecting" || (this._state === "offline" && this._navigator?.onLine !== false)) {
      this._open();
    } else if (this._state === "open") {
      this._probe(); // after a sleep or a network change the socket may be dead without knowing it
    } else if (online && this._state === "offline") {
      this._open();
    }
  }

  /** The browser went offline: stop the reconnect timer until it is back. */
  _pause() {
    if (this._state === "reconnecting") {
      this._clear("retry");
      this._setState("offline", {});
    } else if (this._state === "open") {
      this._probe();
    }
  }

  /** @param {boolean} on */
  _listen(on) {
    const method = on ? "addEventListener" : "removeEventListener";
    this._window?.[method]?.("online", this._onOnline);
    this._window?.[method]?.("offline", this._onOffline);
    this._document?.[method]?.("visibilitychange", this._onVisible);
  }

  // -- heartbeat ----------------------------------------------------------------------------------

  _schedulePing() {
    if (this._heartbeat === null) return;
    this._arm("ping", this._heartbeat.interval, () => {
      this._probe();
      this._schedulePing();
    });
  }

  /** Send a ping; if nothing at all arrives within the timeout, the connection is dead. */
  _probe() {
    if (this._heartbeat === null || !this._isOpen() || this._timers.dead !== null) return;
    this._write("ping");
    const timeout = this._heartbeat.timeout;
    this._arm("dead", timeout, () => {
      const ws = this._detach();
      try {
        ws?.close(4000, "heartbeat timeout");
      } catch {
        // the socket is gone anyway
      }
      // Do not wait for a close handshake a dead peer will never answer.
      this._closed(1006, `no answer to ping within ${timeout} ms`);
    });
  }

  // -- receiving ----------------------------------------------------------------------------------

  /** @param {unknown} data */
  _receive(data) {
    this._clear("dead"); // any frame proves the server is alive
    if (data === "pong" || typeof data !== "string") return;
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m === null || typeof m !== "object" || Array.isArray(m)) return;
    const room = this._room;
    if (room !== null && room.request !== null && (m.id === room.request || (m.id === undefined && m.type === "welcome"))) {
      if (m.type === "welcome" || m.type === "error") this._joinAnswered(room, m);
      return; // e.g. the "left" of the room this join switched away from
    }
    const entry = m.id !== undefined ? this._pending.get(m.id) : undefined;
    if (entry !== undefined && entry.answers.includes(m.type)) {
      this._pending.delete(m.id);
      this._clearTimer(entry.timer);
      if (m.type === "error") entry.reject(new SendError("refused", String(m.reason ?? "refused"), m));
      else entry.resolve(m);
      if (m.type === "ack" && typeof m.offset === "number" && entry.ws === this._ws && room?.joined && room.name === entry.room) {
        this._own(room.name, m.offset);
      }
      return;
    }
    if (ROOM_TRAFFIC.has(m.type) && (room === null || !room.joined)) {
      return; // from the room this client left or is switching away from, before the welcome
    }
    if (m.type === "message" && !this._accept(m)) return;
    this._emit("message", m);
  }

  /**
   * Position bookkeeping for a "message": false for one already seen.
   * @param {ServerMessage} m
   */
  _accept(m) {
    const room = this._room;
    if (room === null || typeof m.offset !== "number") return true;
    const p = this._positions[room.name];
    if (p === undefined) return true;
    if (typeof m.epoch === "string" && m.epoch !== p.epoch) {
      // The room's history restarted under us (an eviction, a Redis restart): its offsets start
      // again, so none of them was seen here. Take it from its start; say so if some came before.
      p.epoch = m.epoch;
      p.offset = 0;
      this._ownAhead.clear();
      this._gapCheck = null;
      if (m.offset > 1) this._emit("gap", { room: room.name, after: 0, next: m.offset, epoch: m.epoch });
    }
    if (m.offset <= p.offset) return false;
    const check = this._gapCheck;
    if (check !== null && check.room === room.name && m.offset > check.after) {
      // The first message after the last one seen before the reload: is it the next one?
      this._gapCheck = null;
      if (m.offset > check.after + 1) this._emit("gap", { room: room.name, after: check.after, next: m.offset });
    }
    p.offset = m.offset;
    this._absorb(p);
    return true;
  }

  /**
   * Our own message at `offset` was acknowledged. The server never sends it back to us, so the
   * position moves over it once every message before it has arrived (an ack may overtake them):
   * then a reload does not mistake it for a missed message.
   * @param {string} name
   * @param {number} offset
   */
  _own(name, offset) {
    const p = this._positions[name];
    if (p === undefined || offset <= p.offset) return;
    this._ownAhead.add(offset);
    this._absorb(p);
  }

  /** @param {{epoch: string, offset: number}} p */
  _absorb(p) {
    while (this._ownAhead.delete(p.offset + 1)) p.offset += 1;
    for (const offset of this._ownAhead) if (offset <= p.offset) this._ownAhead.delete(offset);
    this._save();
  }

  _sendJoin() {
    const room = this._room;
    if (room === null) return;
    /** @type {Record<string, unknown>} */
    const message = { type: "join", room: room.name, ...room.fields };
    const stored = this._positions[room.name];
    /** @type {"since"|"history"|null} */
    let replay = null;
    if (stored !== undefined && !room.resume) {
      message.since = { epoch: stored.epoch, offset: stored.offset };
      replay = "since";
    } else if (room.history > 0) {
      message.history = room.history;
      replay = "history";
    } else if (stored !== undefined) {
      message.since = { epoch: stored.epoch, offset: stored.offset };
      replay = "since";
    }
    const id = this._nextId++;
    message.id = id;
    room.request = id;
    room.replay = replay;
    room.rejoin = room.everJoined === true;
    this._write(JSON.stringify(message));
  }

  /**
   * @param {RoomState} room
   * @param {ServerMessage} m
   */
  _joinAnswered(room, m) {
    room.request = null;
    if (m.type === "error") {
      const reason = String(m.reason ?? "refused");
      const error = new SendError("refused", reason, m);
      const waiters = room.waiters;
      room.waiters = [];
      for (const w of waiters) w.reject(error);
      this._forgetRoom("closed", `could not join ${room.name}: ${reason}`, room.name);
      this._emit("joinerror", { room: room.name, reason, rejoin: room.rejoin, reply: m });
      return;
    }
    if (m.type !== "welcome") return;
    const latest = typeof m.epoch === "string" && typeof m.offset === "number" ? { epoch: m.epoch, offset: m.offset } : null;
    const stored = this._positions[room.name];
    let recovered = null;
    this._gapCheck = null;
    if (latest === null) {
      delete this._positions[room.name];
    } else if (room.replay === "since") {
      recovered = m.recovered === true && stored.epoch === latest.epoch;
      if (!recovered) this._positions[room.name] = { epoch: latest.epoch, offset: 0 };
    } else if (room.replay === "history") {
      // The recent messages (offsets after latest - history) follow, then live traffic: all new here.
      this._positions[room.name] = { epoch: latest.epoch, offset: Math.max(0, latest.offset - room.history) };
      if (room.resume && stored !== undefined) {
        // After a reload: complete if the recent messages reach back to the last one seen.
        recovered = stored.epoch === latest.epoch && latest.offset - stored.offset <= room.history;
        if (recovered && latest.offset > stored.offset) this._gapCheck = { room: room.name, after: stored.offset };
      }
    } else {
      this._positions[room.name] = latest;
    }
    room.resume = false;
    room.joined = true;
    this._ownAhead.clear();
    room.everJoined = true;
    this._save();
    const waiters = room.waiters;
    room.waiters = [];
    for (const w of waiters) w.resolve(m);
    this._emit("welcome", { room: room.name, welcome: m, recovered, replay: room.replay, rejoin: room.rejoin });
    this._flush();
  }

  /**
   * @param {SendErrorKind} kind
   * @param {string} reason
   * @param {string} [name]
   */
  _forgetRoom(kind, reason, name = this._room?.name) {
    const room = this._room;
    if (room !== null && room.name === name) {
      this._room = null;
      for (const w of room.waiters) w.reject(new SendError(kind, reason));
      room.waiters = [];
    }
    if (name !== undefined) delete this._positions[name];
    this._gapCheck = null;
    this._save();
    this._rejectQueue(kind, reason);
  }

  // -- sending ------------------------------------------------------------------------------------

  _ready() {
    return this._isOpen() && (this._room === null || this._room.joined);
  }

  /**
   * @param {Record<string, unknown>} message
   * @param {{queue: boolean, timeout: number|undefined, answers?: string[]}} how
   * @returns {Promise<any>}
   */
  _request(message, { queue, timeout, answers = ["ack", "error"] }) {
    if (this._state === "closed") return Promise.reject(new SendError("closed", "the client is closed"));
    const id = this._nextId++;
    const text = JSON.stringify({ ...message, id });
    const bytes = utf8Length(text);
    return new Promise((resolve, reject) => {
      /** @type {Entry} */
      const entry = {
        id,
        text,
        bytes,
        resolve,
        reject,
        queueable: queue,
        answers,
        timeout: timeout ?? this._ackTimeout,
        timer: null,
        ws: null,
        room: null,
      };
      if (this._ready() || (!queue && this._isOpen())) {
        this._transmit(entry);
        return;
      }
      if (this._queue.length >= this._maxQueued || this._queuedBytes + bytes > this._maxQueuedBytes) {
        reject(
          new SendError(
            "queue-full",
            `the offline queue is full (${this._queue.length} messages, ${this._queuedBytes} of ${this._maxQueuedBytes} bytes)`,
          ),
        );
        return;
      }
      this._queue.push(entry);
      this._queuedBytes += bytes;
      entry.timer = this._setTimeout(() => {
        const i = this._queue.indexOf(entry);
        if (i < 0) return;
        this._queue.splice(i, 1);
        this._queuedBytes -= entry.bytes;
        reject(new SendError("timeout", `not sent within ${this._queueTimeout} ms: the connection is not back`));
      }, this._queueTimeout);
    });
  }

  /** @param {Entry} entry */
  _transmit(entry) {
    entry.ws = this._ws;
    entry.room = this._room?.name ?? null;
    this._pending.set(entry.id, entry);
    entry.timer = this._setTimeout(() => {
      if (this._pending.get(entry.id) !== entry) return;
      this._pending.delete(entry.id);
      entry.reject(new SendError("timeout", `no answer from the server within ${entry.timeout} ms`));
    }, entry.timeout);
    this._write(entry.text);
  }

  _flush() {
    while (this._queue.length > 0 && this._ready()) {
      const entry = /** @type {Entry} */ (this._queue.shift());
      this._queuedBytes -= entry.bytes;
      this._clearTimer(entry.timer);
      this._transmit(entry);
    }
  }

  /**
   * @param {SendErrorKind} kind
   * @param {string} reason
   */
  _rejectQueue(kind, reason) {
    const queue = this._queue;
    this._queue = [];
    this._queuedBytes = 0;
    for (const entry of queue) {
      this._clearTimer(entry.timer);
      entry.reject(new SendError(kind, reason));
    }
  }

  /**
   * @param {SendErrorKind} kind
   * @param {string} reason
   */
  _failAll(kind, reason) {
    this._rejectQueue(kind, reason);
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const entry of pending) {
      this._clearTimer(entry.timer);
      entry.reject(new SendError(kind === "closed" ? "lost" : kind, reason));
    }
    if (this._room !== null) {
      const waiters = this._room.waiters;
      this._room.waiters = [];
      this._room.request = null;
      for (const w of waiters) w.reject(new SendError(kind, reason));
    }
  }

  /** @param {string} text */
  _write(text) {
    try {
      this._ws?.send(text);
    } catch {
      // closing: the close event follows and decides what happens next
    }
  }

  // -- plumbing -----------------------------------------------------------------------------------

  /**
   * @param {import("./trionos").State} state
   * @param {Record<string, unknown>} detail
   */
  _setState(state, detail) {
    this._state = state;
    this._emit("state", { state, ...detail });
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * @param {TimerName} name
   * @param {number} ms
   * @param {() => void} fn
   */
  _arm(name, ms, fn) {
    this._clear(name);
    this._timers[name] = this._setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, ms);
  }

  /** @param {TimerName} name */
  _clear(name) {
    this._clearTimer(this._timers[name]);
    this._timers[name] = null;
  }

  /** @param {unknown} timer */
  _clearTimer(timer) {
    if (timer !== null && timer !== undefined) this._clearTimeout(timer);
  }

  _load() {
    try {
      const raw = this._storage?.getItem(this._storageKey);
      const saved = raw ? JSON.parse(raw) : null;
      if (saved && typeof saved === "object" && saved.positions && typeof saved.positions === "object") {
        return { room: saved.room ?? null, positions: saved.positions };
      }
    } catch {
      // unreadable or switched off: start afresh
    }
    return { room: null, positions: {} };
  }

  _save() {
    const room = this._room === null ? null : { room: this._room.name, fields: this._room.fields };
    try {
      this._storage?.setItem(this._storageKey, JSON.stringify({ room, positions: this._positions }));
    } catch {
      // quota or privacy settings: recovery after a reload is lost, nothing else
    }
  }
}
