"""Test kit for applications built on trionos.

* Connections without sockets: :func:`open_memory_server` (bounded :func:`memory_pipe` streams, so
  backpressure and ``MockClock`` autojump both work), or a real server on 127.0.0.1 with
  :func:`open_loopback_server`; both are an :class:`AppServer`, and :func:`open_app` picks one.
* Assertions: :func:`expect_message`, :func:`expect_silence`, :func:`expect_closed`.
* Faults: :func:`slow_consumer`, :func:`half_open_peer`, :func:`disconnect_mid_frame`, and the
  hand-driven :class:`RawPeer` they are made of.
* Model-based tests: programs of :class:`Connect`/:class:`Send`/:class:`Disconnect` steps checked
  against a :class:`ProgramModel` (:func:`run_program`, :func:`check_program`, :func:`programs`),
  or the same as a Hypothesis state machine, :class:`AppStateMachine`.
* Hypothesis strategies for a :class:`~trionos.Codec`'s protocol: :func:`messages`,
  :func:`malformed_payloads`, :func:`mutated_payloads`, :func:`json_values`.
* A pytest plugin (loaded automatically) with ``trionos_app``, ``trionos_client`` and friends.

Names that need Hypothesis (:class:`AppStateMachine` and the strategies) are imported on first use,
so this package imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import module_getattr as _module_getattr
from ._app import BACKENDS as BACKENDS
from ._app import AppServer as AppServer
from ._app import Backend as Backend
from ._app import ClientFactory as ClientFactory
from ._app import open_app as open_app
from ._expect import Receiver as Receiver
from ._expect import expect_closed as expect_closed
from ._expect import expect_message as expect_message
from ._expect import expect_silence as expect_silence
from ._faults import CuttingProxy as CuttingProxy
from ._faults import disconnect_mid_frame as disconnect_mid_frame
from ._faults import half_open_peer as half_open_peer
from ._faults import open_cutting_proxy as open_cutting_proxy
from ._faults import slow_consumer as slow_consumer
from ._harness import check_program as check_program
from ._harness import run_program as run_program
from ._http import HttpResponse as HttpResponse
from ._loopback import LoopbackServer as LoopbackServer
from ._loopback import open_loopback_server as open_loopback_server
from ._memory import MemoryServer as MemoryServer
from ._memory import open_memory_server as open_memory_server
from ._peer import RawPeer as RawPeer
from ._peer import open_raw_peer as open_raw_peer
from ._pipe import PipeStream as PipeStream
from ._pipe import memory_pipe as memory_pipe
from ._program import Connect as Connect
from ._program import Deliveries as Deliveries
from ._program import Disconnect as Disconnect
from ._program import ProgramModel as ProgramModel
from ._program import Send as Send
from ._program import Step as Step
from ._program import programs as programs

if TYPE_CHECKING:
    from ._machine import AppStateMachine as AppStateMachine
    from ._strategies import json_values as json_values
    from ._strategies import malformed_payloads as malformed_payloads
    from ._strategies import messages as messages
    from ._strategies import mutated_payloads as mutated_payloads

# Loaded on first access (PEP 562), because they import hypothesis: name -> private module.
_LAZY = {
    "AppStateMachine": "._machine",
    "json_values": "._strategies",
    "malformed_payloads": "._strategies",
    "messages": "._strategies",
    "mutated_payloads": "._strategies",
}

#: Old public name -> (its replacement, the release that removes it); each use warns.
_DEPRECATED: dict[str, tuple[str, str]] = {"AppClient": ("AppServer", "0.3")}


__getattr__ = _module_getattr(__name__, _LAZY, _DEPRECATED)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AppServer",
    "AppStateMachine",
    "BACKENDS",
    "Backend",
    "ClientFactory",
    "Connect",
    "CuttingProxy",
    "Deliveries",
    "Disconnect",
    "HttpResponse",
    "LoopbackServer",
    "MemoryServer",
    "PipeStream",
    "ProgramModel",
    "RawPeer",
    "Receiver",
    "Send",
    "Step",
    "check_program",
    "disconnect_mid_frame",
    "expect_closed",
    "expect_message",
    "expect_silence",
    "half_open_peer",
    "json_values",
    "malformed_payloads",
    "memory_pipe",
    "messages",
    "mutated_payloads",
    "open_app",
    "open_cutting_proxy",
    "open_loopback_server",
    "open_memory_server",
    "open_raw_peer",
    "programs",
    "run_program",
    "slow_consumer",
]
