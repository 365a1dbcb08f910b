// Types for trionos.js, the browser client for the trionos room chat protocol (see docs/browser.md).

/** Close codes after which the client reconnects. */
export declare const RETRY_CLOSE_CODES: readonly number[];

/** The connection's states. */
export type State = "idle" | "connecting" | "open" | "reconnecting" | "offline" | "closed";

/** The back-off schedule (milliseconds): attempt n waits uniform(0, min(maximum, initial * factor ** n)). */
export interface Backoff {
  initial: number;
  maximum: number;
  factor: number;
}

/** The text ping/pong heartbeat (milliseconds). */
export interface Heartbeat {
  /** Time between two pings. */
  interval: number;
  /** Silence after a ping after which the connection is declared dead and replaced. */
  timeout: number;
}

/** The defaults of every option. */
export declare const DEFAULTS: Readonly<{
  backoff: Readonly<Backoff>;
  stableAfter: number;
  heartbeat: Readonly<Heartbeat>;
  ackTimeout: number;
  queueTimeout: number;
  maxQueued: number;
  maxQueuedBytes: number;
}>;

/** A Storage-like object (sessionStorage by default; null keeps nothing across reloads). */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** Options of {@link Socket}; every one has a default. */
export interface SocketOptions {
  /** The page address relative URLs are resolved against (default: location.href). */
  base?: string;
  backoff?: Partial<Backoff>;
  /** Milliseconds a connection must stay open before the back-off starts again from its first step (5000). */
  stableAfter?: number;
  /** The heartbeat, or null for none. */
  heartbeat?: Partial<Heartbeat> | null;
  /** Milliseconds to wait for the answer to a written message (10000). */
  ackTimeout?: number;
  /** Milliseconds a message may wait in the offline queue (60000). */
  queueTimeout?: number;
  /** The offline queue's bound in messages (100). */
  maxQueued?: number;
  /** The offline queue's bound in UTF-8 bytes of JSON (65536). */
  maxQueuedBytes?: number;
  /** Close codes after which to reconnect (default RETRY_CLOSE_CODES); any other code closes for good. */
  retryOn?: Iterable<number>;
  /**
   * Rejoin by itself, with "since" the last position before the gap, when a live message skips an
   * offset or comes from a new epoch, so that the server replays what was missed (true). With
   * false, the "gap" event says so (recovering: false) and the next reconnect asks for it.
   */
  recoverGaps?: boolean;
  /** Injected for tests: the WebSocket class, timers, clock, random source, storage and browser objects. */
  WebSocket?: new (url: string) => WebSocket;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (timer: unknown) => void;
  now?: () => number;
  random?: () => number;
  storage?: StorageLike | null;
  window?: EventTarget | null;
  navigator?: { onLine: boolean } | null;
  document?: (EventTarget & { visibilityState: string }) | null;
}

/** A position in a room's history: its epoch and an offset in it. */
export interface Position {
  epoch: string;
  offset: number;
}

/** The most offsets Positions remembers beyond a gap, per room (1024, as the Python client). */
export declare const MAX_AHEAD: number;

/**
 * The last position seen per room, with the rules of trionos.Positions in the Python client: the
 * unbroken run, the offsets seen beyond a gap (at most MAX_AHEAD), and when to recover.
 */
export declare class Positions {
  /** `saved`: what toJSON() gave (anything that is not a position is ignored). */
  constructor(saved?: Record<string, Position> | null);
  /** The position to send as "since": the last one with nothing missing before it, or null. */
  since(room: string): Position | null;
  /** Record a welcome: recovered null (no recovery asked), true or false (see the Python client). */
  welcome(room: string, latest: Position, recovered: boolean | null): void;
  /** Record the welcome of a join that asked for the last `count` messages. */
  recent(room: string, latest: Position, count: number): void;
  /** True if the message is new, false for one already seen (drop it). */
  receive(room: string, offset: number, epoch?: string | null): boolean;
  /** Our own message at `offset`, from its ack (the server never sends it to us). */
  own(room: string, offset: number): void;
  /** The lowest offset seen beyond the gap (what arrived after the hole), or null. */
  nextSeen(room: string): number | null;
  /** Whether a gap or a new epoch was noticed that recoveryDue() has not reported yet. */
  gapOpen(room: string): boolean;
  /** The position to rejoin with after a gap or a new epoch was noticed, once; else null. */
  recoveryDue(room: string): Position | null;
  forget(room: string): void;
  toJSON(): Record<string, Position>;
}

/** A server message: a JSON object tagged by "type". */
export interface ServerMessage {
  type: string;
  [field: string]: unknown;
}

/** The answer to an acknowledged chat: {type: "ack", id, offset?, time}. */
export interface Ack extends ServerMessage {
  type: "ack";
  id: number | string;
  offset?: number;
  time?: number;
}

export interface StateDetail {
  state: State;
  /** "reconnecting": milliseconds until the next attempt, and when it is due (ms since the epoch). */
  delay?: number;
  at?: number;
  /** Attempts since the last stable connection. */
  attempt?: number;
  /** The close code and reason that ended the last connection (also on "closed"). */
  code?: number;
  reason?: string;
  willRetry?: boolean;
}

export interface WelcomeDetail {
  room: string;
  welcome: ServerMessage;
  /**
   * true: nothing was missed since the last message seen (after a reconnect, or a reload);
   * false: some messages may be missing; null: nothing to recover (a fresh join).
   */
  recovered: boolean | null;
  /** How this join asked for messages: "since" a position, the last N ("history"), or null. */
  replay: "since" | "history" | null;
  /** True when the client re-joined by itself after a reconnect. */
  rejoin: boolean;
  /**
   * True when this was the client's own join to fill a gap noticed while connected (see
   * GapDetail): the missed messages follow, older than some already delivered (their offsets say
   * where they belong).
   */
  recovery: boolean;
}

export interface JoinErrorDetail {
  room: string;
  reason: string;
  rejoin: boolean;
  /**
   * True when the refused join was a recovery (see GapDetail): the client is still in the room,
   * the gap stays; otherwise the room is forgotten.
   */
  recovery: boolean;
  reply: ServerMessage;
}

export interface GapDetail {
  room: string;
  /**
   * The offset of the last message with nothing missing before it (before a reload: the last one
   * seen), and of the message that arrived after the hole.
   */
  after: number;
  next: number;
  /** Set when the room's history restarted under a live page (a new epoch): `after` is 0. */
  epoch?: string;
  /**
   * True when the client rejoined to fill the gap (a live message skipped an offset or came from
   * a new epoch): a "welcome" with `recovery: true` and the missed messages follow. False after a
   * reload (the recent history itself has the hole) or with `recoverGaps: false`.
   */
  recovering: boolean;
}

export interface EventMap {
  state: StateDetail;
  welcome: WelcomeDetail;
  message: ServerMessage;
  joinerror: JoinErrorDetail;
  gap: GapDetail;
}

export type SendErrorKind = "refused" | "timeout" | "lost" | "queue-full" | "closed";

/** Why a send, join or leave failed. */
export declare class SendError extends Error {
  constructor(kind: SendErrorKind, reason: string, reply?: ServerMessage | null);
  readonly kind: SendErrorKind;
  /** The server's reason ("refused"), or what happened. */
  readonly reason: string;
  /** The server's error message ("refused"), else null. */
  readonly reply: ServerMessage | null;
}

/** The WebSocket URL for `url` relative to the page (ws: from http:, wss: from https:). */
export declare function socketUrl(url?: string, base?: string): string;

/** The full-jitter back-off delay (ms) before reconnect attempt `attempt`. */
export declare function backoffDelay(attempt: number, backoff: Backoff, random: () => number): number;

/** A connection to a trionos chat server that stays up. */
export declare class Socket extends EventTarget {
  constructor(url?: string, options?: SocketOptions);
  /** The absolute WebSocket URL. */
  readonly url: string;
  readonly state: State;
  /** The room joined or being joined, or null. */
  readonly room: string | null;
  /** True once the server welcomed this connection into the room. */
  readonly joined: boolean;
  /** Messages waiting in the offline queue. */
  readonly queued: number;
  /** The room and join fields this tab was in before a reload, or null. */
  saved: { room: string; fields: Record<string, unknown> } | null;
  /** The last position in `room` with nothing missing before it (what a rejoin sends as "since"). */
  position(room: string): Position | null;
  on<K extends keyof EventMap>(type: K, listener: (detail: EventMap[K]) => void): () => void;
  connect(): void;
  close(code?: number, reason?: string): void;
  join(room: string, fields?: Record<string, unknown>, options?: { history?: number }): Promise<ServerMessage>;
  leave(): Promise<ServerMessage | null>;
  send(message: Record<string, unknown>, options?: { timeout?: number }): Promise<Ack>;
}
