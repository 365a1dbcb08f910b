"""The harness that replays programs against an app and checks every delivery.

The harness runs the steps of a program (see :mod:`._program`) against the real app over
in-memory connections, waits after each step until nothing more can happen (every task blocked),
and compares what every client received with what the model predicted, in order, exactly. Each
program of :func:`run_program` runs in its own ``trio.run`` on a ``MockClock`` with autojump, so
runs are deterministic and time-outs cost nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
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
from ._app import AppServer
from ._memory import open_memory_server
from ._program import Connect, Deliveries, Disconnect, ProgramModel, Send, Step, validate_program

__all__ = ["MAX_INBOX", "Harness", "check_program", "open_harness", "run_program"]

#: Messages a test client keeps unread before it stops reading (and its server waits).
MAX_INBOX = 1000


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


class Harness:
    """Numbered clients of one app, each read by its own task into a bounded inbox.

    Open one with :func:`open_harness`, which owns the clients' tasks.

    Args:
        app: the app the clients connect to.
        model: what the deliveries are checked against.
        nursery: runs the clients' reading tasks.
        path: the path clients connect to.
        codec: decodes what clients receive (JSON when None).
        send_codec: encodes what clients send (JSON when None).
        max_inbox: the unchecked messages a client keeps before it stops reading.
    """

    def __init__(
        self,
        app: AppServer,
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
        """Run *step* against the app, let it settle, and compare every inbox with the model.

        Args:
            step: the step.

        Raises:
            AssertionError: describing the step, the client, what the model expected and what
                arrived, and the program so far.
            ValueError: the step makes no sense (a send by a client that is not connected).
            TypeError: *step* is not a step.
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
async def open_harness(
    app: AppServer,
    model: ProgramModel,
    *,
    path: str = "/",
    codec: MessageCodec[Any] | None = None,
    send_codec: MessageCodec[Any] | None = None,
    max_inbox: int = MAX_INBOX,
) -> AsyncIterator[Harness]:
    """Open a :class:`Harness` whose client tasks run in a nursery of its own.

    On exit every client is closed cleanly (shielded, for at most 60 s), then the nursery is
    cancelled.

    Args:
        app: the app the clients connect to.
        model: what the deliveries are checked against.
        path: the path clients connect to.
        codec: decodes what clients receive (JSON when None).
        send_codec: encodes what clients send (JSON when None).
        max_inbox: the unchecked messages a client keeps before it stops reading.

    Yields:
        The harness.
    """
    async with trio.open_nursery() as nursery:
        harness = Harness(
            app, model, nursery, path=path, codec=codec, send_codec=send_codec, max_inbox=max_inbox
        )
        try:
            yield harness
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(60):
                await harness.close_all()
            nursery.cancel_scope.cancel()


async def check_program(
    app: AppServer,
    program: Iterable[Step],
    model: ProgramModel,
    *,
    path: str = "/",
    codec: MessageCodec[Any] | None = None,
    send_codec: MessageCodec[Any] | None = None,
    max_inbox: int = MAX_INBOX,
) -> None:
    """Replay *program* against *app* and assert after each step that deliveries match *model*.

    Needs the memory backend (:func:`~trionos.testing.open_memory_server`): "every task is
    blocked" means "nothing more will happen" only when no bytes can be in flight in a kernel.

    Args:
        app: the app, served in memory.
        program: the steps.
        model: says what each step delivers.
        path: the path clients connect to.
        codec: decodes what clients receive (JSON when None).
        send_codec: encodes what clients send that is not ``str``/``bytes`` (JSON when None).
        max_inbox: the unchecked messages a client keeps before it stops reading.

    Raises:
        ValueError: before anything runs, a step makes no sense (a client sends before it
            connects).
        AssertionError: at the first step whose deliveries differ, listing the program up to it.
    """
    steps = list(program)
    validate_program(steps)
    failure: AssertionError | None = None
    async with open_harness(
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
    """Run a fresh app in its own ``trio.run`` with in-memory connections and check *program*.

    Synchronous, for use in a Hypothesis ``@given`` test (see :func:`check_program`).

    Args:
        program: the steps.
        model: says what each step delivers.
        app: returns an async context manager yielding the handler (an
            ``@asynccontextmanager`` that opens the app's :class:`~trionos.Hub`, say), so every
            program starts from a fresh app.
        path: the path clients connect to.
        codec: decodes what clients receive (JSON when None).
        send_codec: encodes what clients send that is not ``str``/``bytes`` (JSON when None).
        clock: the run's clock (default: a ``MockClock`` with autojump).
        **serve_options: for the server (``heartbeat``, limits).

    Raises:
        ValueError: before anything runs, a step makes no sense.
        AssertionError: at the first step whose deliveries differ, listing the program up to it.
    """
    steps = list(program)
    validate_program(steps)
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
