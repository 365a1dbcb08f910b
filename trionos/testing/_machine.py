"""A Hypothesis ``RuleBasedStateMachine`` that drives an app's clients and checks them against a model.

Hypothesis calls rules synchronously, one after another, while the app needs a running Trio loop
that lives across rules. So each machine runs its own ``trio.run`` in a worker thread (the loop's
owner), and every rule hands one step to that loop with ``trio.from_thread.run`` and waits for it.
Time is a ``MockClock`` that autojumps only while a step runs and stands still between rules, so
the steps see the same virtual time however long Hypothesis takes in between: runs are
deterministic, and Hypothesis seeds Trio's scheduler (Trio registers its random source with it).

This module imports hypothesis; :mod:`trionos.testing` loads it only when ``AppStateMachine`` is used.
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

import trio
import trio.testing
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from .._connection import MessageCodec
from .._server import Handler
from ._harness import Harness, open_harness
from ._memory import open_memory_server
from ._program import Connect, Disconnect, ProgramModel, Send, Step

__all__ = ["AppStateMachine"]

T = TypeVar("T")
S = TypeVar("S")


class _LoopThread(Generic[S]):
    """A ``trio.run`` in a worker thread, set up by ``open_state()``, taking calls from other threads.

    Args:
        open_state: opens what the calls work on (the harness); the loop holds it open until
            :meth:`stop`.

    Raises:
        RuntimeError: the state failed to open (its error is the cause).
    """

    def __init__(self, open_state: Callable[[], AbstractAsyncContextManager[S]]) -> None:
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        self._state: S | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(open_state,), name="trionos-machine", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._token is None:
            self._thread.join()
            raise RuntimeError("the app under test failed to start") from self._error

    @property
    def state(self) -> S:
        """What ``open_state()`` yielded."""
        if self._state is None:
            raise RuntimeError("the loop's state is not open")
        return self._state

    def _run(self, open_state: Callable[[], AbstractAsyncContextManager[S]]) -> None:
        try:
            trio.run(self._main, open_state, clock=self.clock)
        except BaseException as exc:  # handed to the test thread, which re-raises it
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self, open_state: Callable[[], AbstractAsyncContextManager[S]]) -> None:
        async with open_state() as state:
            self._state = state
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            # Between rules nothing may happen: no autojump, so virtual time stands still.
            self.clock.autojump_threshold = math.inf
            self._ready.set()
            await self._stop.wait()
            # Closing may wait for close handshakes and time-outs: let time run again.
            self.clock.autojump_threshold = 0

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the loop with time running.

        Args:
            fn: the call to run in the loop.

        Returns:
            What it returned.

        Raises:
            RuntimeError: the loop has stopped (what it stopped with is the cause). Whatever
                ``fn()`` raises is raised here as it was.
        """

        async def timed() -> T:
            self.clock.autojump_threshold = 0
            try:
                return await fn()
            finally:
                self.clock.autojump_threshold = math.inf

        try:
            return trio.from_thread.run(timed, trio_token=self._token)
        except trio.RunFinishedError:
            self._thread.join()
            raise RuntimeError("the app under test stopped") from self._error

    def stop(self) -> None:
        """End the loop (closing the app) and wait for its thread.

        Raises:
            BaseException: whatever the loop failed with, as it was.
        """
        if self._stop is not None and self._thread.is_alive():
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join()
        if self._error is not None:
            raise self._error


class AppStateMachine(RuleBasedStateMachine):
    """Rules that connect, send and disconnect clients of an app, checked against a model after each.

    Subclass it, point it at the app and the model, and collect ``YourMachine.TestCase``::

        class ChatMachine(AppStateMachine):
            messages = st.sampled_from([...])       # what clients send

            def make_model(self):
                return ChatModel()                  # a ProgramModel

            def open_app(self):
                return chat_app()                   # async context manager yielding the handler

        TestChat = ChatMachine.TestCase

    Every subclass gets three rules built from its own attributes: ``connect(client)``,
    ``send(client, message)`` (``message`` drawn from ``messages``; an unconnected client connects
    first) and ``disconnect(client, abrupt)``; a connect or disconnect that does not apply does
    nothing. Each example gets a fresh app, in-memory connections and a fresh model. Add your own
    rules and invariants as usual; :meth:`step` runs any :data:`~trionos.testing.Step` and
    :attr:`connected` says who is connected. Each machine runs its app in its own ``trio.run``
    (in a worker thread) on a ``MockClock`` that stands still between rules.

    Attributes:
        messages: draws what clients send.
        clients: client numbers are ``0..clients-1``.
        path: the path clients connect to.
        codec: decodes what clients receive (JSON when None).
        send_codec: encodes what clients send (JSON when None).
        abrupt_disconnects: some disconnects end the stream without a close frame.
        serve_options: for the server (``heartbeat``, limits).
    """

    messages: ClassVar[st.SearchStrategy[Any]] = st.nothing()
    clients: ClassVar[int] = 3
    path: ClassVar[str] = "/"
    codec: ClassVar[MessageCodec[Any] | None] = None
    send_codec: ClassVar[MessageCodec[Any] | None] = None
    abrupt_disconnects: ClassVar[bool] = True
    serve_options: ClassVar[Mapping[str, Any]] = {}

    def make_model(self) -> ProgramModel:
        """Make the model of a fresh app; subclasses define it.

        Returns:
            A :class:`~trionos.testing.ProgramModel`.
        """
        raise NotImplementedError("define make_model() in your AppStateMachine subclass")

    def open_app(self) -> AbstractAsyncContextManager[Handler]:
        """Open a fresh app; subclasses define it.

        Returns:
            An async context manager yielding the app's handler (open its
            :class:`~trionos.Hub` in it).
        """
        raise NotImplementedError("define open_app() in your AppStateMachine subclass")

    def __init__(self) -> None:
        super().__init__()
        self._connected: set[int] = set()
        # Started by the first step: examples Hypothesis rejects early never pay for a loop.
        self._loop: _LoopThread[Harness] | None = None

    @asynccontextmanager
    async def _open_state(self) -> AsyncIterator[Harness]:
        model = self.make_model()
        async with (
            self.open_app() as handler,
            open_memory_server(handler, **self.serve_options) as memory,
            open_harness(
                memory, model, path=self.path, codec=self.codec, send_codec=self.send_codec
            ) as harness,
        ):
            yield harness

    @property
    def connected(self) -> frozenset[int]:
        """The numbers of the clients connected now."""
        return frozenset(self._connected)

    def step(self, step: Step) -> None:
        """Run one step against the app and check the deliveries against the model.

        The first step starts the app (in its own loop thread).

        Args:
            step: a :class:`~trionos.testing.Connect`, :class:`~trionos.testing.Send` or
                :class:`~trionos.testing.Disconnect`.

        Raises:
            AssertionError: what a client received differs from what the model says.
            ValueError: the step makes no sense (a client that is not connected sends).
        """
        if self._loop is None:
            self._loop = _LoopThread(self._open_state)
        harness = self._loop.state
        self._loop.call(lambda: harness.apply(step))
        self._connected = harness.connected

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _define_rules(cls)

    def teardown(self) -> None:
        """Close the app and its clients (Hypothesis calls it after each example)."""
        if self._loop is not None:
            self._loop.stop()


def _define_rules(cls: type[AppStateMachine]) -> None:
    """Give ``cls`` its connect/send/disconnect rules, drawing from its own ``messages`` and ``clients``.

    Rules take their values as arguments (not ``st.data()`` draws), so Hypothesis prints failing
    steps as ``state.send(client=0, message=...)`` and shrinks them well. They have no
    preconditions and draw clients from a fixed range, so a shrunk program stays valid: a step that
    no longer makes sense where it is becomes a no-op (a send connects first), as in programs().
    """
    clients = st.integers(0, cls.clients - 1)
    abrupt = st.booleans() if cls.abrupt_disconnects else st.just(False)

    @rule(client=clients)
    def connect(self: AppStateMachine, client: int) -> None:
        """The client connects (nothing happens if it is connected already)."""
        if client not in self._connected:
            self.step(Connect(client))

    @rule(client=clients, message=cls.messages)
    def send(self: AppStateMachine, client: int, message: Any) -> None:
        """The client sends ``message`` (connecting first if it must)."""
        if client not in self._connected:
            self.step(Connect(client))
        self.step(Send(client, message))

    @rule(client=clients, abrupt=abrupt)
    def disconnect(self: AppStateMachine, client: int, abrupt: bool) -> None:
        """The client disconnects, cleanly or abruptly (nothing happens if it is not connected)."""
        if client in self._connected:
            self.step(Disconnect(client, abrupt))

    # Assigned here, after the class exists, because the strategies come from its attributes.
    cls.connect = connect
    cls.send = send
    cls.disconnect = disconnect
