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
// * while connected, a live message that skips an offset or comes from a new epoch (the room's
//   history restarted) makes it rejoin with "since" the last position before the gap, once per gap,
//   so the server replays what was missed; the bookkeeping is Positions, the Python client's rules;
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

/**
 * The most offsets {@link Positions} remembers beyond a gap, per room, while it waits for the gap
 * to be filled; beyond that it gives the gap up (its position jumps to the newest seen). The same
 * bound as trionos.MAX_AHEAD in the Python client.
 */
export const MAX_AHEAD = 1024;

/** @typedef {{epoch: string, offset: number}} Position */
/**
 * One room's bookkeeping: the last position of the unbroken run seen, what is beyond it, and
 * whether a recovery is due (or was reported for the gap still open: once, not again for every
 * message beyond it before the rejoin's welcome).
 * @typedef {{position: Position, ahead: Set<number>, replayTo: number|null, due: boolean, reported: boolean}} Track
 */

/**
 * @param {Position} position
 * @param {Set<number>} [ahead]
 * @param {number|null} [replayTo]
 * @param {boolean} [due]
 * @returns {Track}
 */
const newTrack = (position, ahead = new Set(), replayTo = null, due = false) => ({
  position: { epoch: position.epoch, offset: position.offset },
  ahead,
  replayTo,
  due,
  reported: false,
});

/**
 * The last position seen per room, as trionos.Positions does it in the Python client (the same
 * rules, checked against the same cases): the last offset of the unbroken run of messages seen,
 * the offsets seen beyond a gap (at most MAX_AHEAD), and whether a recovery is due because a live
 * message skipped an offset or came from a new epoch (the room's history restarted). Pure
 * bookkeeping: no I/O, no clock. {@link Socket} keeps one; a page that speaks the chat protocol
 * with its own WebSocket can use it directly.
 */
export class Positions {
  /**
   * @param {Record<string, Position>|null} [saved] positions from toJSON() (e.g. kept in storage);
   *   anything that is not a position is ignored
   */
  constructor(saved = null) {
    /** @type {Map<string, Track>} */
    this._rooms = new Map();
    if (saved !== null && typeof saved === "object") {
      for (const [room, p] of Object.entries(saved)) {
        if (p !== null && typeof p === "object" && typeof p.epoch === "string" && Number.isSafeInteger(p.offset) && p.offset >= 0) {
          this._rooms.set(room, newTrack(p));
        }
      }
    }
  }

  /**
   * The position to send as "since" when (re)joining `room`: the last one with nothing missing
   * before it, or null before the room's first welcome.
   * @param {string} room
   * @returns {Position|null}
   */
  since(room) {
    const track = this._rooms.get(room);
    return track === undefined ? null : { ...track.position };
  }

  /**
   * Record the server's answer to a join.
   * @param {string} room
   * @param {Position} latest the room's latest position, from the welcome
   * @param {boolean|null} recovered null (the join did not ask to recover): continue from
   *   `latest`; true: the missed messages follow, continue from where we were; false: what follows
   *   is all the server still has, take every message of the room's current epoch that arrives
   */
  welcome(room, latest, recovered) {
    const track = this._rooms.get(room);
    if (recovered === null || recovered === undefined || track === undefined) {
      this._rooms.set(room, newTrack(latest));
    } else if (recovered && track.position.epoch === latest.epoch) {
      track.replayTo = latest.offset;
      track.reported = false;
    } else {
      const same = track.position.epoch === latest.epoch;
      this._rooms.set(room, newTrack({ epoch: latest.epoch, offset: 0 }, same ? track.ahead : new Set(), latest.offset));
    }
  }

  /**
   * Record the answer to a join that asked for the room's last `count` messages: they follow (at
   * most that many, offsets after latest - count), then live traffic.
   * @param {string} room
   * @param {Position} latest
   * @param {number} count
   */
  recent(room, latest, count) {
    this._rooms.set(room, newTrack({ epoch: latest.epoch, offset: Math.max(0, latest.offset - count) }, new Set(), latest.offset));
  }

  /**
   * Note that a message at `offset` (of `epoch`, when the server says) arrived in `room`.
   * @param {string} room
   * @param {number} offset
   * @param {string|null} [epoch] another epoch than the position's means the history restarted
   * @returns {boolean} true if it is new, false for one already seen (drop it); a room never
   *   welcomed accepts everything
   */
  receive(room, offset, epoch = null) {
    let track = this._rooms.get(room);
    if (track === undefined) return true;
    if (typeof epoch === "string" && epoch !== track.position.epoch) {
      // A new history: its offsets start again, and those before this one were missed.
      track = newTrack({ epoch, offset: 0 }, new Set(), null, offset > 1);
      this._rooms.set(room, track);
    }
    if (track.replayTo !== null && offset > track.replayTo) {
      // The first message after a recovery's replay: everything up to it was covered.
      track.position.offset = Math.max(track.position.offset, track.replayTo);
      track.replayTo = null;
      track.reported = false; // that recovery is through: a hole left from here is a new gap
      absorb(track);
    }
    if (offset <= track.position.offset || track.ahead.has(offset)) return false;
    if (offset === track.position.offset + 1) {
      track.position.offset = offset;
      absorb(track);
      return true;
    }
    track.ahead.add(offset);
    if (track.replayTo === null && !track.reported) track.due = true; // a live message skipped ahead: one was missed
    if (track.ahead.size > MAX_AHEAD) {
      // Give the gap up.
      track.position.offset = Math.max(...track.ahead);
      track.ahead.clear();
      track.due = false;
      track.reported = false;
    }
    return true;
  }

  /**
   * Note our own message at `offset` (from its ack): the server never sends it to us.
   * @param {string} room
   * @param {number} offset
   */
  own(room, offset) {
    const track = this._rooms.get(room);
    if (track !== undefined && offset > track.position.offset) {
      track.ahead.add(offset);
      absorb(track);
    }
  }

  /**
   * Whether a gap or a new epoch was noticed in `room` that recoveryDue() has not reported yet.
   * @param {string} room
   * @returns {boolean}
   */
  gapOpen(room) {
    return this._rooms.get(room)?.due === true;
  }

  /**
   * The lowest offset seen beyond the gap in `room` (the message that arrived after the hole), or
   * null when nothing is beyond the position.
   * @param {string} room
   * @returns {number|null}
   */
  nextSeen(room) {
    const ahead = this._rooms.get(room)?.ahead;
    return ahead === undefined || ahead.size === 0 ? null : Math.min(...ahead);
  }

  /**
   * The position to rejoin `room` with, once, after a gap or a new epoch was noticed: null when
   * nothing is missing or this was already said for the current gap.
   * @param {string} room
   * @returns {Position|null}
   */
  recoveryDue(room) {
    const track = this._rooms.get(room);
    if (track === undefined || !track.due) return null;
    track.due = false;
    track.reported = true;
    return { ...track.position };
  }

  /**
   * Stop tracking `room`.
   * @param {string} room
   */
  forget(room) {
    this._rooms.delete(room);
  }

  /** @returns {Record<string, Position>} every room's position (what a reload needs) */
  toJSON() {
    /** @type {Record<string, Position>} */
    const out = {};
    for (const [room, track] of this._rooms) out[room] = { ...track.position };
    return out;
  }
}

/**
 * Move `track`'s position over the offsets seen just after it; forget those behind it.
 * @param {Track} track
 */
function absorb(track) {
  const ahead = track.ahead;
  let offset = track.position.offset;
  while (ahead.delete(offset + 1)) offset += 1;
  track.position.offset = offset;
  for (const o of ahead) if (o <= offset) ahead.delete(o);
  if (ahead.size === 0 && track.replayTo === null) {
    track.due = false; // the gap is filled
    track.reported = false;
  }
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
 *   request: number|null, recovery: boolean, resume: boolean, waiters: Waiter[], replay: "since"|"history"|null,
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
    this._recoverGaps = o.recoverGaps ?? true;
    /** @type {{room: string, after: number}|null} After a reload whose welcome looked complete. */
    this._gapCheck = null;
    /** @type {{room: string, next: number, epoch: string|null}|null} A gap noticed, not yet reported. */
    this._gap = null;
    const saved = this._load();
    /** Per room: the last position with nothing missing before it, and what is beyond it. */
    this._positions = new Positions(saved.positions);
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
    return this._positions.since(room);
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
    const stored = this._positions.since(room);
    // A position stored for the room this tab was in before a reload: recover as a reconnect does.
    const resume = this._room === null && stored !== null && this.saved?.room === room;
    if (this._room !== null) this._forgetRoom("closed", "joined another room");
    if (!resume) this._positions.forget(room);
    this.saved = null;
    /** @type {RoomState} */
    const state = {
      name: room,
      fields: { ...fields },
      history,
      joined: false,
      request: null,
      recovery: false,
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
        // The server never sends our own message back: the position moves over it, so that a
        // reload or a gap check does not take it for a missed one.
        this._positions.own(room.name, m.offset);
        this._save();
      }
      this._settleGap();
      return;
    }
    if (ROOM_TRAFFIC.has(m.type) && (room === null || !room.joined)) {
      return; // from the room this client left or is switching away from, before the welcome
    }
    if (m.type === "message" && !this._accept(m)) return;
    this._emit("message", m);
  }

  /**
   * Position bookkeeping for a "message": false for one already seen. A live message that skips
   * an offset, or comes from a new epoch, opens a gap: see _settleGap.
   * @param {ServerMessage} m
   */
  _accept(m) {
    const room = this._room;
    if (room === null || typeof m.offset !== "number") return true;
    const name = room.name;
    const before = this._positions.since(name);
    if (before === null) return true;
    const epoch = typeof m.epoch === "string" ? m.epoch : null;
    if (epoch !== null && epoch !== before.epoch) this._gapCheck = null; // a new history: the old check is moot
    const fresh = this._positions.receive(name, m.offset, epoch);
    if (!fresh) return false;
    const check = this._gapCheck;
    if (check !== null && check.room === name && m.offset > check.after) {
      // The first message after the last one seen before the reload: is it the next one?
      this._gapCheck = null;
      if (m.offset > check.after + 1) this._emit("gap", { room: name, after: check.after, next: m.offset, recovering: false });
    }
    if (this._gap === null && this._positions.gapOpen(name)) {
      this._gap = { room: name, next: m.offset, epoch: epoch !== null && epoch !== before.epoch ? epoch : null };
    }
    this._save();
    this._settleGap();
    return true;
  }

  /**
   * Report a gap noticed while connected (a skipped offset, a new epoch) and rejoin with "since"
   * the last position with nothing missing before it, so that the server replays what was
   * missed; once per gap. While one of our own messages awaits its ack on this connection, wait:
   * its offset may be the one that looks missing (an ack can come after later messages).
   */
  _settleGap() {
    const gap = this._gap;
    const room = this._room;
    if (gap === null) return;
    if (room === null || room.name !== gap.room || !this._positions.gapOpen(gap.room)) {
      this._gap = null; // filled (by an ack), or the room is gone
      return;
    }
    for (const entry of this._pending.values()) {
      if (entry.ws === this._ws && entry.room === gap.room && entry.answers.includes("ack")) return;
    }
    this._gap = null;
    const next = this._positions.nextSeen(gap.room) ?? gap.next;
    const since = /** @type {Position} */ (this._positions.recoveryDue(gap.room));
    // A join already on its way (a recovery, or a rejoin) covers this gap too: its replay reaches
    // at least the message that showed the gap, which the server sent before answering it.
    if (room.request !== null) return;
    const recovering = this._recoverGaps && room.joined && this._isOpen();
    /** @type {Record<string, unknown>} */
    const detail = { room: gap.room, after: since.offset, next, recovering };
    if (gap.epoch !== null) detail.epoch = gap.epoch;
    this._emit("gap", detail);
    if (recovering) this._sendJoin(since);
  }

  /**
   * Send the room's join: `since` a gap's position (a recovery while connected), or as the
   * situation asks (a fresh join, a rejoin after a reconnect, a reload).
   * @param {Position|null} [recover]
   */
  _sendJoin(recover = null) {
    const room = this._room;
    if (room === null) return;
    /** @type {Record<string, unknown>} */
    const message = { type: "join", room: room.name, ...room.fields };
    const stored = recover ?? this._positions.since(room.name);
    /** @type {"since"|"history"|null} */
    let replay = null;
    if (recover !== null) {
      message.since = { epoch: recover.epoch, offset: recover.offset };
      replay = "since";
    } else if (stored !== null && !room.resume) {
      message.since = { epoch: stored.epoch, offset: stored.offset };
      replay = "since";
    } else if (room.history > 0) {
      message.history = room.history;
      replay = "history";
    } else if (stored !== null) {
      message.since = { epoch: stored.epoch, offset: stored.offset };
      replay = "since";
    }
    const id = this._nextId++;
    message.id = id;
    room.request = id;
    room.replay = replay;
    room.recovery = recover !== null;
    room.rejoin = room.everJoined === true;
    this._write(JSON.stringify(message));
  }

  /**
   * @param {RoomState} room
   * @param {ServerMessage} m
   */
  _joinAnswered(room, m) {
    room.request = null;
    const recovery = room.recovery;
    room.recovery = false;
    if (m.type === "error" && recovery) {
      // The server refused the join that was to fill a gap (a rate limit, say): still in the room,
      // the gap stays; a reconnect or the next gap asks again.
      const reason = String(m.reason ?? "refused");
      this._emit("joinerror", { room: room.name, reason, rejoin: true, recovery: true, reply: m });
      return;
    }
    if (m.type === "error") {
      const reason = String(m.reason ?? "refused");
      const error = new SendError("refused", reason, m);
      const waiters = room.waiters;
      room.waiters = [];
      for (const w of waiters) w.reject(error);
      this._forgetRoom("closed", `could not join ${room.name}: ${reason}`, room.name);
      this._emit("joinerror", { room: room.name, reason, rejoin: room.rejoin, recovery: false, reply: m });
      return;
    }
    if (m.type !== "welcome") return;
    const latest = typeof m.epoch === "string" && typeof m.offset === "number" ? { epoch: m.epoch, offset: m.offset } : null;
    const name = room.name;
    const stored = this._positions.since(name);
    let recovered = null;
    this._gapCheck = null;
    if (latest === null) {
      this._positions.forget(name);
    } else if (room.replay === "since" && stored !== null) {
      // What was missed follows, then live traffic; what was seen already is dropped.
      recovered = m.recovered === true && stored.epoch === latest.epoch;
      this._positions.welcome(name, latest, m.recovered === true);
    } else if (room.replay === "history") {
      // The recent messages (offsets after latest - history) follow, then live traffic: all new here.
      this._positions.recent(name, latest, room.history);
      if (room.resume && stored !== null) {
        // After a reload: complete if the recent messages reach back to the last one seen.
        recovered = stored.epoch === latest.epoch && latest.offset - stored.offset <= room.history;
        if (recovered && latest.offset > stored.offset) this._gapCheck = { room: name, after: stored.offset };
      }
    } else {
      this._positions.welcome(name, latest, null);
    }
    // This join asked for everything after the position: a gap noticed meanwhile is covered.
    this._positions.recoveryDue(name);
    this._gap = null;
    room.resume = false;
    room.joined = true;
    room.everJoined = true;
    this._save();
    const waiters = room.waiters;
    room.waiters = [];
    for (const w of waiters) w.resolve(m);
    this._emit("welcome", { room: name, welcome: m, recovered, replay: room.replay, rejoin: room.rejoin, recovery });
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
    if (name !== undefined) this._positions.forget(name);
    this._gapCheck = null;
    this._gap = null;
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
      this._settleGap(); // a gap that waited for this ack

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
      this._storage?.setItem(this._storageKey, JSON.stringify({ room, positions: this._positions.toJSON() }));
    } catch {
      // quota or privacy settings: recovery after a reload is lost, nothing else
    }
  }
}
