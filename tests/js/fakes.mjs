// Test doubles for trionos.js: a fake WebSocket, a fake clock, a fake storage and browser objects.
// Nothing here touches the network or the real clock: time moves only when a test calls clock.tick.

/** A clock with setTimeout/clearTimeout that runs due callbacks only in tick(). */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.time + ms, fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
    this.now = () => this.time;
  }

  /** Move time on by `ms`, running every timer that falls due, in order. */
  tick(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = Math.max(this.time, next[1].at);
      next[1].fn();
    }
    this.time = end;
  }

  /** How many timers are armed. */
  get pending() {
    return this.timers.size;
  }
}

/** A WebSocket class whose instances a test drives: open(), receive(), drop(). */
export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(data);
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }

    /** The JSON messages sent (pings left out). */
    get json() {
      return this.sent.filter((s) => s !== "ping").map((s) => JSON.parse(s));
    }

    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { FakeWebSocket, sockets };
}

/** A Storage in memory. */
export class FakeStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
}

/** The browser objects the client listens to: window (online/offline), navigator, document. */
export function fakeBrowser() {
  const window = new EventTarget();
  const document = new EventTarget();
  document.visibilityState = "visible";
  const navigator = { onLine: true };
  return { window, document, navigator };
}
