"""Model-based testing: replay a program of client steps against an app and check every delivery.

A *program* is a list of steps (:class:`Connect`, :class:`Send`, :class:`Disconnect`) by numbered
clients. A *model* is a plain Python object that says, for each step, which messages each
connected client must receive because of it. The harness runs the steps against the real app over
in-memory connections, waits after each step until nothing more can happen (every task blocked),
and compares what every client received with what the model predicted, in order, exactly.

Hypothesis writes the programs (:func:`programs`) and shrinks a failing one to the shortest
program that still fails. Each program runs in its own ``trio.run`` on a ``MockClock`` with
autojump, so runs are deterministic and time-outs cost nothing. This module imports hypothesis
only inside :func:`programs`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import attrs
import trio
import trio.testing

from .._client import ClientOptions, connect_over
from .._connection import MessageCodec, WebSocket
from .._errors import ConnectionClosed, DecodeError
from .._json import dumps as dumps_json
from .._json import loads as loads_json
from .._server import Handler
from ._app import AppClient
from ._memory import open_memory_server

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "Connect",
    "Deliveries",
    "Disconnect",
    "ProgramModel",
    "Send",
    "Step",
    "check_program",
    "programs",
    "run_program",
]

#: What a model returns for one step: client number -> the messages it must receive, in order.
Deliveries = Mapping[int, Sequence[Any]]

#: Messages a test client keeps unread before it stops reading (and its server waits).
MAX_INBOX = 1000


@attrs.frozen
class Connect:
    """Client ``client`` opens a WebSocket to the app."""

    client: int


@attrs.frozen
class Send:
    """Client ``client`` sends ``message`` (str/bytes as is, anything else encoded, JSON by default)."""

    client: int
    message: Any


@attrs.frozen
class Disconnect:
    """Client ``client`` goes away: a clean close (1000), or ``abrupt``: the stream just ends (1006)."""

    client: int
    abrupt: bool = False


Step = Connect | Send | Disconnect


class ProgramModel(Protocol):
    """What a model implements: the deliveries each step causes (clients not listed get nothing).

    Messages are compared as received: decoded with the ``codec`` passed to the runner, or parsed
    as JSON when none is given (binary messages stay bytes). Use :data:`unittest.mock.ANY` for
    parts the model cannot predict, such as error texts.
    """

    def connect(self, client: int) -> Deliveries:
        """Client ``client`` connected."""
        ...

    def send(self, client: int, message: Any) -> Deliveries:
        """Client ``client`` sent ``message``."""
        ...

    def disconnect(self, client: int) -> Deliveries:
        """Client ``client`` disconnected (cleanly or not); it no longer receives anything."""
        ...


@attrs.define(eq=False)
class _Client:
    number: int
    ws: WebSocket
    stream: trio.abc.Stream
    max_inbox: int
    inbox: deque[Any] = attrs.Factory(deque)
    problems: list[str] = attrs.Factory(list)
    closed: ConnectionClosed | None = None
    #: Set when the program disconnects it: from then on it discards what it reads.
    leaving: bool = False
    reported: bool = False
    done: trio.Event = attrs.Factory(trio.Event)
    _taken: trio.Event = attrs.Factory(trio.Event)

    async def add(self, message: Any) -> None:
        # The bound: a client whose inbox is full stops reading (as a real one would) until the
        # next check takes the inbox, or until it is leaving.
        while len(self.inbox) >= self.max_inbox and not self.leaving:
            await self._taken.wait()
        if not self.leaving:
            self.inbox.append(message)

    def leave(self) -> None:
        self.leaving = True
        self.take()

    def take(self) -> list[Any]:
        messages = list(self.inbox)
        self.inbox.clear()
        self._taken.set()
        self._taken = trio.Event()
        return messages


class _Harness:
    """Numbered clients of one app, each read by its own task into a bounded inbox."""

    def __init__(
        self,
        app: AppClient,
        model: ProgramModel,
        nursery: trio.Nursery,
        *,
        path: str,
        codec: MessageCodec[Any] | None,
        send_codec: MessageCodec[Any] | None,
        max_inbox: int,
    ) -> None:
        self._app = app
        self._model = model
        self._nursery = nursery
        self._path = path
        self._codec = codec
        self._send_codec = send_codec
        self._max_inbox = max_inbox
        self._clients: dict[int, _Client] = {}
        self.history: list[Step] = []

    @property
    def connected(self) -> set[int]:
        """The numbers of the clients connected now."""
        return set(self._clients)

    # --- the clients -----------------------------------------------------------------------

    def _decode(self, raw: str | bytes) -> Any:
        if self._codec is not None:
            return self._codec.decode(raw)
        return raw if isinstance(raw, bytes) else loads_json(raw)

    def _encode(self, message: Any) -> str | bytes:
        if isinstance(message, str | bytes):
            return message
        if self._send_codec is not None:
            return self._send_codec.encode(message)
        return dumps_json(message)

    async def _run_client(self, number: int, *, task_status: trio.TaskStatus[_Client]) -> None:
        streams: list[trio.abc.Stream] = []

        async def dial() -> trio.abc.Stream:
            streams.append(await self._app.dial())
            return streams[-1]

        host = urlsplit(self._app.url).netloc
        client: _Client | None = None
        try:
            async with connect_over(dial, host, self._path, ClientOptions(heartbeat=None), remote=None) as ws:
                client = _Client(number, ws, streams[0], self._max_inbox)
                task_status.started(client)
                try:
                    while True:
                        raw = await ws.recv()
                        try:
                            message = self._decode(raw)
                        except DecodeError as exc:
                            client.problems.append(f"received {raw!r}, which does not decode: {exc}")
                            continue
                        await client.add(message)
                except ConnectionClosed as exc:
                    client.closed = exc
        finally:
            if client is not None:
                client.done.set()

    async def _settle(self) -> None:
        # Every task blocked: the app has done all the step caused (in memory nothing is in flight).
        await trio.testing.wait_all_tasks_blocked()

    # --- the steps -------------------------------------------------------------------------

    async def apply(self, step: Step) -> None:
        """Run ``step`` against the app, let it settle, and compare every inbox with the model.

        Raises :class:`AssertionError` describing the step, the client, what the model expected and
        what arrived; :class:`ValueError` for a step that makes no sense (a send by a client that
        is not connected).
        """
        self.history.append(step)
        match step:
            case Connect(client=number):
                if number in self._clients:
                    raise ValueError(f"{step!r}: client {number} is already connected")
                self._clients[number] = await self._nursery.start(self._run_client, number)
                await self._settle()
                deliveries = self._model.connect(number)
            case Send(client=number, message=message):
                await self._require(step, number).ws.send(self._encode(message))
                await self._settle()
                deliveries = self._model.send(number, message)
            case Disconnect(client=number, abrupt=abrupt):
                client = self._require(step, number)
                client.leave()
                if abrupt:
                    await trio.aclose_forcefully(client.stream)
                else:
                    await client.ws.close()
                await client.done.wait()
                del self._clients[number]
                await self._settle()
                deliveries = self._model.disconnect(number)
            case _:
                raise TypeError(f"not a program step: {step!r}")
        self._check(step, deliveries)

    def _require(self, step: Step, number: int) -> _Client:
        client = self._clients.get(number)
        if client is None:
            raise ValueError(f"{step!r}: client {number} is not connected")
        return client

    def _check(self, step: Step, deliveries: Deliveries) -> None:
        failures = []
        for number in sorted(set(deliveries) - set(self._clients)):
            if deliveries[number]:
                failures.append(f"the model expects messages for client {number}, which is not connected")
        for number, client in sorted(self._clients.items()):
            got = client.take()
            expected = list(deliveries.get(number, ()))
            failures.extend(f"client {number} {problem}" for problem in client.problems)
            client.problems.clear()
            if expected != got:
                failures.append(
                    f"client {number} received the wrong messages\n"
                    f"    expected: {expected!r}\n"
                    f"    got:      {got!r}"
                )
            if client.closed is not None and not client.reported:
                failures.append(f"client {number}'s {client.closed}")
                client.reported = True
        if failures:
            program = "\n".join(f"  {i}: {s!r}" for i, s in enumerate(self.history))
            raise AssertionError(
                f"after step {len(self.history) - 1}, {step!r}:\n  "
                + "\n  ".join(failures)
                + f"\nthe program so far:\n{program}"
            )

    async def close_all(self) -> None:
        """Close every client cleanly and wait for its task to end."""
        for client in list(self._clients.values()):
            client.leave()
            await client.ws.close()
            await client.done.wait()
        self._clients.clear()


@asynccontextmanager
async def _open_harness(
    app: AppClient,
    model: ProgramModel,
    *,
    path: str = "/",
    codec: MessageCodec[Any] | None = None,
    send_codec: MessageCodec[Any] | None = None,
    max_inbox: int = MAX_INBOX,
) -> AsyncIterator[_Harness]:
    async with trio.open_nursery() as nursery:
        harness = _Harness(
            app, model, nursery, path=path, codec=codec, send_codec=send_codec, max_inbox=max_inbox
        )
        try:
            yield harness
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(60):
                await harness.close_all()
            nursery.cancel_scope.cancel()


async def check_program(
    app: AppClient,
    program: Iterable[Step],
    model: ProgramModel,
    *,
    path: str = "/",
    codec: MessageCodec[Any] | None = None,
    send_codec: MessageCodec[Any] | None = None,
    max_inbox: int = MAX_INBOX,
) -> None:
    """Replay ``program`` against ``app`` and assert after each step that deliveries match ``model``.

    Clients connect to ``path``. Received messages are decoded with ``codec`` (JSON when None);
    sent messages that are not ``str``/``bytes`` are encoded with ``send_codec`` (JSON when None).
    Each client keeps at most ``max_inbox`` unchecked messages, then stops reading.

    Needs the memory backend: "every task is blocked" means "nothing more will happen" only when
    no bytes can be in flight in a kernel. Raises :class:`ValueError` before anything runs if a
    step makes no sense (a client sends before it connects), and :class:`AssertionError` at the
    first step whose deliveries differ, listing the program up to it.
    """
    steps = list(program)
    _validate(steps)
    failure: AssertionError | None = None
    async with _open_harness(
        app, model, path=path, codec=codec, send_codec=send_codec, max_inbox=max_inbox
    ) as harness:
        for step in steps:
            try:
                await harness.apply(step)
            except AssertionError as exc:
                # Raised outside the nurseries, so the caller sees it bare, not in an ExceptionGroup.
                failure = exc
                break
    if failure is not None:
        raise failure


def run_program(
    program: Iterable[Step],
    model: ProgramModel,
    app: Callable[[], AbstractAsyncContextManager[Handler]],
    *,
    path: str = "/",
    codec: MessageCodec[Any] | None = None,
    send_codec: MessageCodec[Any] | None = None,
    clock: trio.abc.Clock | None = None,
    **serve_options: Any,
) -> None:
    """Run the app in a fresh ``trio.run`` with in-memory connections and :func:`check_program` it.

    ``app()`` returns an async context manager yielding the handler (an ``@asynccontextmanager``
    that opens the app's :class:`~trionos.Hub`, say), so every program starts from a fresh app.
    ``serve_options`` go to the server (``heartbeat``, limits). The clock is a ``MockClock`` with
    autojump unless ``clock`` is given. Synchronous, for use in a Hypothesis ``@given`` test.
    """
    steps = list(program)
    _validate(steps)
    failure: AssertionError | None = None

    async def main() -> None:
        nonlocal failure
        async with app() as handler, open_memory_server(handler, **serve_options) as memory:
            try:
                await check_program(memory, steps, model, path=path, codec=codec, send_codec=send_codec)
            except AssertionError as exc:
                failure = exc

    trio.run(main, clock=clock or trio.testing.MockClock(autojump_threshold=0))
    if failure is not None:
        raise failure


def _validate(steps: list[Step]) -> None:
    """Raise ValueError for a step that makes no sense where it is, before anything runs."""
    connected: set[int] = set()
    for i, step in enumerate(steps):
        if not isinstance(step, Connect | Send | Disconnect):
            raise TypeError(f"step {i} is not a program step: {step!r}")
        if isinstance(step, Connect):
            if step.client in connected:
                raise ValueError(f"step {i}, {step!r}: client {step.client} is already connected")
            connected.add(step.client)
        elif step.client not in connected:
            raise ValueError(f"step {i}, {step!r}: client {step.client} is not connected")
        elif isinstance(step, Disconnect):
            connected.discard(step.client)


def _repair(steps: list[Step]) -> list[Step]:
    """Make a list of steps a valid program: connect clients before they send, drop void steps."""
    connected: set[int] = set()
    program: list[Step] = []
    for step in steps:
        if isinstance(step, Connect):
            if step.client in connected:
                continue
            connected.add(step.client)
        elif isinstance(step, Send):
            if step.client not in connected:
                connected.add(step.client)
                program.append(Connect(step.client))
        elif step.client in connected:
            connected.discard(step.client)
        else:
            continue
        program.append(step)
    return program


def programs(
    messages: SearchStrategy[Any],
    *,
    clients: int = 3,
    max_steps: int = 30,
    abrupt: bool = True,
) -> SearchStrategy[list[Step]]:
    """A Hypothesis strategy for valid programs of up to ``max_steps`` steps by ``clients`` clients.

    ``messages`` draws what clients send. A client connects before it first sends (a connect is
    inserted when needed); with ``abrupt``, some disconnects end the stream without a close frame.
    Failing programs shrink towards fewer steps, fewer clients and simpler messages.
    """
    from hypothesis import strategies as st

    if clients < 1:
        raise ValueError(f"clients must be at least 1, got {clients!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    number = st.integers(0, clients - 1)
    send = st.builds(Send, client=number, message=messages)
    step = st.one_of(
        # First, so that steps shrink to a connect, which _repair drops when it changes nothing.
        st.builds(Connect, client=number),
        # Sends are what exercise the app: make them most of the steps.
        send,
        send,
        send,
        st.builds(Disconnect, client=number, abrupt=st.booleans() if abrupt else st.just(False)),
    )

    @st.composite
    def program(draw: st.DrawFn) -> list[Step]:
        # The length is drawn first (uniformly, shrinking towards 1): plain st.lists averages
        # only a handful of elements, too few to reach the states where bugs hide.
        size = draw(st.integers(1, max_steps))
        return _repair(draw(st.lists(step, min_size=size, max_size=size)))

    return program()
