"""Counters for every bound: what was refused, dropped, limited or timed out, and the traffic.

Pure: plain integers on one object, no locks (Trio runs one task at a time) and no I/O, so an
increment on a hot path costs one attribute update. The server, the hub and the brokers each
take a ``metrics=`` argument; pass the same :class:`Metrics` to all of them to see a whole
deployment in one place. Exposition (Prometheus text format) lives elsewhere and only reads
these numbers.
"""

from __future__ import annotations

import attrs

__all__ = ["Metrics", "RefusalReason"]


class RefusalReason:
    """The ``reason`` label of ``Metrics.connections_refused`` (plain strings).

    See :attr:`Metrics.connections_refused <trionos.Metrics.connections_refused>`.
    """

    #: The server's connection cap was reached (HTTP 503).
    CAPACITY = "capacity"
    #: One remote address holds as many connections as it may (HTTP 503).
    PER_ADDRESS = "per_address"
    #: The ``Origin`` header is not allowed (HTTP 403).
    ORIGIN = "origin"
    #: The request head was malformed or not a valid upgrade (HTTP 400).
    BAD_REQUEST = "bad_request"
    #: The request head was larger than the limit (HTTP 431).
    HEAD_TOO_LARGE = "head_too_large"
    #: The request head did not arrive within the handshake timeout.
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    #: The handler rejected the request (``Request.reject``).
    REJECTED = "rejected"


@attrs.define(eq=False)
class Metrics:
    """Counters of one deployment: connections, traffic and every bound that acted.

    Counters only grow; gauges (``*_open``) go up and down. Each field's docstring says what
    increments it. A fresh object starts at zero; nothing is global, so tests and separate
    servers in one process never see each other's numbers.
    """

    #: TCP connections accepted by the server (counter).
    connections_accepted: int = 0
    #: TCP connections open now (gauge).
    connections_open: int = 0
    #: WebSocket connections open now (gauge), server side.
    websockets_open: int = 0
    #: Connections refused before a WebSocket was accepted, by :class:`RefusalReason` (counter).
    connections_refused: dict[str, int] = attrs.field(factory=dict)
    #: WebSocket connections closed, by close code (counter); 1006 for no close frame.
    websockets_closed: dict[int, int] = attrs.field(factory=dict)
    #: Connections of the trio-websocket bridge that ended closed, by close code (counter);
    #: 1006 for no close frame. Counted by :func:`~trionos.bridge_trio_websocket` given these
    #: metrics.
    bridge_closed: dict[int, int] = attrs.field(factory=dict)
    #: Names the chat protocol refused (:func:`trionos.chat.normalize_name` given these metrics),
    #: by :class:`trionos.chat.InvalidName` reason: ``too_long``, ``look_alike``, ``invalid``
    #: (counter).
    names_refused: dict[str, int] = attrs.field(factory=dict)
    #: WebSocket messages received (counter).
    messages_in: int = 0
    #: WebSocket message payload bytes received (counter).
    bytes_in: int = 0
    #: WebSocket messages sent, one per recipient of a broadcast (counter).
    messages_out: int = 0
    #: WebSocket frame bytes sent, counted per recipient (counter).
    bytes_out: int = 0
    #: Frames dropped by the ``drop_oldest`` slow-client policy (counter).
    frames_dropped: int = 0
    #: Clients closed with 1008 by the ``disconnect`` slow-client policy (counter).
    slow_client_disconnects: int = 0
    #: Messages refused by a per-connection rate limit (counter).
    rate_limited: int = 0
    #: Connections ended because the peer was silent for longer than the heartbeat timeout.
    heartbeat_timeouts: int = 0
    #: Connections whose request head has not arrived yet (gauge).
    handshakes_open: int = 0
    #: Connections ended without sending a single byte: handshake timeout or eviction (counter).
    silent_connections: int = 0
    #: Connections without a request head ended at capacity to admit a newcomer (counter).
    handshakes_evicted: int = 0
    #: Times a connection paused reading because inflation used up its budget
    #: (``ServerOptions.max_inflate_rate``) (counter).
    inflation_waits: int = 0
    #: Frames from other nodes dropped because a room's feed was full (counter).
    remote_frames_dropped: int = 0
    #: Envelopes the broker could not publish (queue full or broker unreachable) (counter).
    broker_publish_dropped: int = 0
    #: Times the broker reconnected after losing its server (counter).
    broker_reconnects: int = 0
    #: Messages appended to a room's history (counter).
    history_appended: int = 0
    #: Messages trimmed from a room's history by its bounds (counter).
    history_trimmed: int = 0
    #: Rooms whose in-memory history was forgotten: evicted by ``max_rooms``, or idle with nothing
    #: kept when the hub swept (counter).
    history_rooms_dropped: int = 0
    #: Recoveries that filled the whole gap (counter).
    recoveries_complete: int = 0
    #: Recoveries that could not fill the gap: epoch changed or history trimmed (counter).
    recoveries_partial: int = 0
    #: Messages replayed to recovering clients (counter).
    messages_replayed: int = 0
    #: Bytes waiting in the hub for clients whose replay did not fit their outbox at once: the
    #: replay's rest and the frames queued behind it (gauge; see ``Hub.join_with_history``).
    #: Counted per client, though replayed frames are often bytes shared with the history.
    backlog_bytes_open: int = 0

    def refused(self, reason: str) -> None:
        """Count one connection refused.

        Args:
            reason: why, a :class:`~trionos.RefusalReason` value.
        """
        self.connections_refused[reason] = self.connections_refused.get(reason, 0) + 1

    def closed(self, code: int) -> None:
        """Count one WebSocket closed.

        Args:
            code: its close code (1006 when no close frame was exchanged).
        """
        self.websockets_closed[code] = self.websockets_closed.get(code, 0) + 1

    def bridge_closed_with(self, code: int) -> None:
        """Count one bridged trio-websocket connection that ended closed.

        Args:
            code: its close code (1006 when no close frame was exchanged).
        """
        self.bridge_closed[code] = self.bridge_closed.get(code, 0) + 1
