"""Prometheus exposition of :class:`~trionos.Metrics`, through ``prometheus_client`` (optional).

``pip install trionos[prometheus]``. Nothing here runs on a hot path: a :class:`MetricsCollector`
reads the plain integers of a ``Metrics`` object when Prometheus scrapes, and
``prometheus_client`` writes the text format (:func:`prometheus_client.generate_latest`).

Every field of ``Metrics`` is exported under the ``trionos_`` prefix: an integer field as a
counter (``*_total``), or a gauge when its name ends in ``_open``; a dict field as a counter with
one label (``reason`` for refused connections and names, ``code`` for closed WebSockets and
bridged connections, where the codes 3000-4999 a peer may choose are bucketed by range so that a
client cannot add series).
docs/metrics.md documents each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

try:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "trionos' Prometheus exposition needs prometheus_client: pip install 'trionos[prometheus]'"
    ) from None

from ._metrics import Metrics
from ._server import Request

__all__ = ["MetricsCollector", "respond_metrics"]

#: The label of each dict-valued field (any other dict field is labelled ``key``).
_LABELS = {
    "connections_refused": "reason",
    "websockets_closed": "code",
    "bridge_closed": "code",
    "names_refused": "reason",
}
#: The dict fields keyed by a close code, which a peer chooses: bucketed (:func:`close_code_label`).
_CLOSE_CODES = frozenset({"websockets_closed", "bridge_closed"})

#: One line of help per field, as Prometheus shows it (a field missing here gets its name).
_HELP = {
    "connections_accepted": "TCP connections accepted by the server.",
    "connections_open": "TCP connections open now.",
    "websockets_open": "WebSocket connections open now (server side).",
    "connections_refused": "Connections refused before a WebSocket was accepted, by reason.",
    "websockets_closed": "WebSocket connections closed, by close code (1006: no close frame).",
    "bridge_closed": "trio-websocket bridge connections that ended closed, by close code.",
    "names_refused": "Names the chat protocol refused, by reason (too_long, look_alike, invalid).",
    "messages_in": "WebSocket messages received.",
    "bytes_in": "WebSocket message payload bytes received.",
    "messages_out": "WebSocket messages sent (a broadcast counts once per recipient).",
    "bytes_out": "WebSocket frame bytes sent (a broadcast counts once per recipient).",
    "frames_dropped": "Outbox frames dropped by the drop_oldest slow-client policy.",
    "slow_client_disconnects": "Clients closed with 1008 by the disconnect slow-client policy.",
    "rate_limited": "Inbound messages refused by a per-connection rate limit.",
    "heartbeat_timeouts": "Connections ended because the peer was silent past the heartbeat timeout.",
    "inflation_waits": "Times a connection paused reading because inflation used up its budget.",
    "handshakes_open": "Connections whose request head has not arrived yet.",
    "silent_connections": "Connections ended without sending a byte (handshake timeout or eviction).",
    "handshakes_evicted": "Connections without a request head ended at capacity to admit a newcomer.",
    "remote_frames_dropped": "Frames from other nodes dropped because a room's feed was full.",
    "broker_publish_dropped": "Envelopes the broker could not publish (queue full or unreachable).",
    "broker_reconnects": "Times the broker reconnected after losing its server.",
    "history_appended": "Messages appended to a room's history.",
    "history_trimmed": "Messages trimmed from a room's history by its bounds.",
    "history_rooms_dropped": "Rooms whose in-memory history was forgotten (max_rooms, or idle and empty).",
    "recoveries_complete": "Recoveries that filled the whole gap.",
    "recoveries_partial": "Recoveries that could not fill the gap.",
    "messages_replayed": "Messages replayed to recovering clients.",
    "backlog_bytes_open": "Bytes of replays (and frames queued behind them) waiting for slow readers.",
}


def close_code_label(code: int) -> str:
    """The ``code`` label of a close code: its number, or its range for an application's code.

    A peer chooses its close code, and 3000-4999 are all valid: labelled one by one, a client
    could make 2,000 series. The codes RFC 6455 defines (below 3000) keep their own label; the
    registered range 3000-3999 and the private range 4000-4999 are one label each
    (``"3000-3999"``, ``"4000-4999"``); anything else is ``"other"``.

    Args:
        code: the close code.

    Returns:
        The label value.
    """
    if 1000 <= code < 3000:
        return str(code)
    if 3000 <= code < 4000:
        return "3000-3999"
    if 4000 <= code < 5000:
        return "4000-4999"
    return "other"


def _labelled(field: str, value: dict[Any, int]) -> dict[str, int]:
    """The counts of a dict field by label value (close codes bucketed, see :func:`close_code_label`)."""
    counts: dict[str, int] = {}
    for key, count in value.items():
        label = close_code_label(key) if field in _CLOSE_CODES else str(key)
        counts[label] = counts.get(label, 0) + count
    return counts


def _families(metrics: Metrics, prefix: str) -> Iterator[Metric]:
    """One metric family per field of *metrics*, named ``<prefix>_<field>``."""
    for field in attrs.fields(type(metrics)):
        value = getattr(metrics, field.name)
        name = f"{prefix}_{field.name}"
        documentation = _HELP.get(field.name, field.name.replace("_", " ") + ".")
        if isinstance(value, dict):
            family = CounterMetricFamily(name, documentation, labels=[_LABELS.get(field.name, "key")])
            for label, count in sorted(_labelled(field.name, value).items()):
                family.add_metric([label], count)
            yield family
        elif field.name.endswith("_open"):
            yield GaugeMetricFamily(name, documentation, value=value)
        else:
            yield CounterMetricFamily(name, documentation, value=value)


class MetricsCollector(Collector):
    """A ``prometheus_client`` collector that reads a :class:`~trionos.Metrics` at scrape time.

    Register it where you collect (``prometheus_client.REGISTRY.register(MetricsCollector(m))``),
    or let :func:`~trionos.respond_metrics` use a private registry. Collecting copies a few
    dozen integers; the counters themselves cost nothing extra between scrapes.

    Args:
        metrics: the counters to expose.
        prefix: what every metric name starts with.
    """

    def __init__(self, metrics: Metrics, *, prefix: str = "trionos") -> None:
        self.metrics = metrics
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        """Read the counters now (``prometheus_client`` calls it at each scrape).

        Returns:
            An iterator of one metric family per field of the ``Metrics``.
        """
        return _families(self.metrics, self.prefix)


def render_metrics(metrics: Metrics, *, prefix: str = "trionos") -> bytes:
    """Write the Prometheus text exposition of *metrics* with ``prometheus_client``.

    Args:
        metrics: the counters.
        prefix: what every metric name starts with.

    Returns:
        The exposition, as the bytes of an HTTP body.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics, prefix=prefix))
    return generate_latest(registry)


async def respond_metrics(request: Request, metrics: Metrics, *, prefix: str = "trionos") -> None:
    """Answer *request* with the Prometheus text exposition of *metrics* (HTTP 200).

    The one line that serves ``/metrics`` on the application's own port::

        if req.path == "/metrics":
            await trionos.respond_metrics(req, metrics)

    Uses only :meth:`Request.respond <trionos.Request.respond>`; the connection closes after
    the response, as for every plain HTTP answer. Cancellation: as ``Request.respond``. Guard
    the path yourself if the figures must not be public (an ``Authorization`` check, or a
    separate port).

    Args:
        request: the plain HTTP request to answer.
        metrics: the counters.
        prefix: what every metric name starts with.
    """
    await request.respond(200, render_metrics(metrics, prefix=prefix), content_type=CONTENT_TYPE_LATEST)
