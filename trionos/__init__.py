"""trionos: Trio-native real-time WebSocket applications.

One port for HTTP and WebSockets (:func:`serve`), a client (:func:`connect`), rooms and broadcast
(:class:`Hub`), typed protocols (:class:`Codec`), heartbeats (:class:`Heartbeat`) and reconnection,
all with structured concurrency: every task has an owner, every queue a bound.
"""

import typing as _typing

from ._app import App as App
from ._app import LifespanApp as LifespanApp
from ._app import SupportsReadiness as SupportsReadiness
from ._backoff import Backoff as Backoff
from ._backoff import RandomSource as RandomSource
from ._binary import decode_base64 as decode_base64
from ._binary import encode_base64 as encode_base64
from ._broker import Broker as Broker
from ._broker import BrokerSink as BrokerSink
from ._broker import Member as Member
from ._broker import PresenceDiff as PresenceDiff
from ._channels import Channels as Channels
from ._channels import ChannelSettings as ChannelSettings
from ._client import connect as connect
from ._codec import Codec as Codec
from ._connection import MessageCodec as MessageCodec
from ._connection import WebSocket as WebSocket
from ._errors import BrokerError as BrokerError
from ._errors import BrokerUncertain as BrokerUncertain
from ._errors import ConnectionClosed as ConnectionClosed
from ._errors import ConnectionRejected as ConnectionRejected
from ._errors import ConnectTimeout as ConnectTimeout
from ._errors import DecodeError as DecodeError
from ._errors import EncodeError as EncodeError
from ._errors import HandshakeError as HandshakeError
from ._errors import TrionosError as TrionosError
from ._fanout import SlowClientPolicy as SlowClientPolicy
from ._heartbeat import send_keepalive as send_keepalive
from ._history import HistoryBounds as HistoryBounds
from ._history import HistoryEntry as HistoryEntry
from ._history import Position as Position
from ._history import Recovery as Recovery
from ._http import Headers as Headers
from ._hub import Hub as Hub
from ._hub_client import Client as Client
from ._hub_client import Sent as Sent
from ._hub_protocols import HubConnection as HubConnection
from ._hub_protocols import HubTransport as HubTransport
from ._lazy import TrionosDeprecationWarning as TrionosDeprecationWarning
from ._lazy import module_getattr as _module_getattr
from ._local_broker import LocalBroker as LocalBroker
from ._metrics import Metrics as Metrics
from ._metrics import RefusalReason as RefusalReason
from ._options import ClientOptionKeywords as ClientOptionKeywords
from ._options import ClientOptions as ClientOptions
from ._options import Heartbeat as Heartbeat
from ._options import ServerOptionKeywords as ServerOptionKeywords
from ._options import ServerOptions as ServerOptions
from ._ratelimit import RateLimit as RateLimit
from ._ratelimit import RateVerdict as RateVerdict
from ._ratelimit import TokenBucket as TokenBucket
from ._reconnect import RETRY_CLOSE_CODES as RETRY_CLOSE_CODES
from ._reconnect import Positions as Positions
from ._reconnect import connect_with_retry as connect_with_retry
from ._reconnect import run_reconnecting as run_reconnecting
from ._runner import run as run
from ._server import Handler as Handler
from ._server import Request as Request
from ._server import Server as Server
from ._server import serve as serve
from ._session import CloseConnection as CloseConnection
from ._session import Joining as Joining
from ._session import Refuse as Refuse
from ._session import Reject as Reject
from ._session import Session as Session
from ._static import CLIENT_CONTENT_TYPE as CLIENT_CONTENT_TYPE
from ._static import client_path as client_path
from ._static import respond_client as respond_client

__version__ = "0.1.0"

if _typing.TYPE_CHECKING:
    from ._bridge import BridgedConnectionClosed as BridgedConnectionClosed
    from ._bridge import BridgedWebSocket as BridgedWebSocket
    from ._bridge import bridge_trio_websocket as bridge_trio_websocket
    from ._prometheus import MetricsCollector as MetricsCollector
    from ._prometheus import respond_metrics as respond_metrics
    from ._redis import RedisBroker as RedisBroker

# Imported on first use (PEP 562): the Redis broker needs the optional coredis package
# (``pip install trionos[redis]``), and the default in-memory broker needs nothing; the
# Prometheus exposition needs prometheus_client (``pip install trionos[prometheus]``); the bridge
# needs trio-websocket (``pip install trionos[trio-websocket]``).
_LAZY = {
    "RedisBroker": "._redis",
    "MetricsCollector": "._prometheus",
    "respond_metrics": "._prometheus",
    "BridgedConnectionClosed": "._bridge",
    "BridgedWebSocket": "._bridge",
    "bridge_trio_websocket": "._bridge",
}

#: Old public name -> (its replacement, the release that removes it); each use warns with
#: TrionosDeprecationWarning. CHANGELOG.md lists them under "Deprecated".
_DEPRECATED: dict[str, tuple[str, str]] = {
    "MemoryBroker": ("LocalBroker", "0.3"),
}


__getattr__ = _module_getattr(__name__, _LAZY, _DEPRECATED)

__all__ = [
    "App",
    "Backoff",
    "BridgedConnectionClosed",
    "BridgedWebSocket",
    "Broker",
    "BrokerError",
    "BrokerSink",
    "BrokerUncertain",
    "CLIENT_CONTENT_TYPE",
    "ChannelSettings",
    "Channels",
    "Client",
    "ClientOptionKeywords",
    "ClientOptions",
    "CloseConnection",
    "Codec",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionRejected",
    "DecodeError",
    "EncodeError",
    "Handler",
    "HandshakeError",
    "Headers",
    "Heartbeat",
    "HistoryBounds",
    "HistoryEntry",
    "Hub",
    "HubConnection",
    "HubTransport",
    "Joining",
    "LifespanApp",
    "LocalBroker",
    "Member",
    "MessageCodec",
    "Metrics",
    "MetricsCollector",
    "Position",
    "Positions",
    "PresenceDiff",
    "RETRY_CLOSE_CODES",
    "RandomSource",
    "RateLimit",
    "RateVerdict",
    "Recovery",
    "RedisBroker",
    "RefusalReason",
    "Refuse",
    "Reject",
    "Request",
    "Sent",
    "Server",
    "ServerOptionKeywords",
    "ServerOptions",
    "Session",
    "SlowClientPolicy",
    "SupportsReadiness",
    "TokenBucket",
    "TrionosDeprecationWarning",
    "TrionosError",
    "WebSocket",
    "__version__",
    "bridge_trio_websocket",
    "client_path",
    "connect",
    "connect_with_retry",
    "decode_base64",
    "encode_base64",
    "respond_client",
    "respond_metrics",
    "run",
    "run_reconnecting",
    "send_keepalive",
    "serve",
]
