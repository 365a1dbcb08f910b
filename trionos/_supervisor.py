"""The supervisor behind ``--workers N``: N worker processes serving one inherited listening socket.

The supervisor binds the socket, starts N workers (``python -m trionos._worker``) that inherit it
and accept on it, and then only watches (docs/design.md says why one inherited socket rather than
``SO_REUSEPORT``). Each worker gets one end of a socket pair: the supervisor sends the settings
over it, the worker answers ``r`` once it serves, and it reads the end of the stream as "the
supervisor is gone", which drains it (so a killed supervisor leaves no orphans serving).

* A worker that dies is logged (its exit status or signal) and replaced; a worker that dies again
  soon after is replaced after a growing delay (0.5 s doubling to 10 s; reset once a worker has
  served for 10 s), so that a crash loop does not spin.
* SIGINT or SIGTERM: every worker gets SIGTERM and drains (WebSockets get 1001); the supervisor
  returns once all have exited (the command exits 0). A second signal is passed on, which stops
  each worker at once, and the supervisor exits with status 1.
* SIGHUP: a rolling restart. For each worker in turn a new one is started, and only once it serves
  is the old one drained, so the port never stops accepting.

Workers run in their own process group, so a Ctrl-C in a terminal reaches the supervisor only,
which then drains them in order.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator

import attrs
import trio

from ._backoff import Backoff
from ._listen import socket_url
from ._runner import RunSettings, StartupError
from ._worker import LENGTH, READY

__all__ = ["HEALTHY_AFTER", "Supervisor", "exit_reason", "supervise"]

logger = logging.getLogger("trionos.supervisor")

#: A worker that served this many seconds resets its slot's restart delay.
HEALTHY_AFTER = 10.0
#: Seconds a worker that gave up starting has to exit by itself before it is killed.
_EXIT_GRACE = 5.0
_RESTART_DELAYS = Backoff(initial=0.5, maximum=10.0, jitter="equal")


def exit_reason(returncode: int) -> str:
    """``"exit status 3"`` or ``"signal SIGKILL"`` for a process's return code (pure)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class _Worker:
    """One worker process and the supervisor's end of its socket pair."""

    def __init__(self, process: trio.Process, channel: trio.SocketStream) -> None:
        self.process = process
        self.channel = channel
        #: True once the supervisor asked it to stop: its exit is expected.
        self.retiring = False
        self.ready_at = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.retiring = True
        if self.process.returncode is None:
            self.process.send_signal(signum)


@attrs.define
class _Slot:
    """One of the N places a worker serves in: its current worker and its restart schedule."""

    number: int
    worker: _Worker | None = None
    delays: Backoff = attrs.field(factory=lambda: attrs.evolve(_RESTART_DELAYS))


class Supervisor:
    """Owns the worker processes of one ``trionos --workers N`` run (see the module docstring)."""

    def __init__(self, settings: RunSettings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        #: True once a signal asked every worker to drain.
        self.stopping = False
        #: True once every slot's first worker served.
        self.started = False
        self.slots = [_Slot(number) for number in range(settings.workers)]
        # Every worker process that has not exited yet (starting, serving or draining).
        self._live: set[_Worker] = set()
        self._payload = pickle.dumps(attrs.evolve(settings, workers=1, fd=None))
        self._nursery: trio.Nursery | None = None
        self._starting = settings.workers
        self._all_started = trio.Event()

    async def spawn(self, slot: _Slot) -> _Worker | None:
        """Start a worker for *slot* and wait until it serves; None if it exited first.

        The worker logs why it could not start; the supervisor logs its exit status.
        """
        ours, theirs = socket.socketpair()
        with theirs:
            command = [sys.executable, "-m", "trionos._worker", str(self.sock.fileno()), str(theirs.fileno())]
            # Its own process group: a terminal's Ctrl-C reaches the supervisor only.
            process = await trio.lowlevel.open_process(
                command, pass_fds=(self.sock.fileno(), theirs.fileno()), process_group=0
            )
        worker = _Worker(process, trio.SocketStream(trio.socket.from_stdlib_socket(ours)))
        self._live.add(worker)
        try:
            await worker.channel.send_all(LENGTH.pack(len(self._payload)) + self._payload)
            answer = await worker.channel.receive_some(1)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            answer = b""
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._reap(worker, signal.SIGKILL)
            raise
        if answer != READY:
            # It closed its end: it is exiting, and says why on its way out.
            with trio.move_on_after(_EXIT_GRACE):
                await worker.process.wait()
            await self._reap(worker, signal.SIGKILL)
            if not self.stopping:
                logger.error(
                    "worker %d (pid %d) exited before serving: %s",
                    slot.number,
                    worker.pid,
                    exit_reason(process.returncode or 0),
                )
            return None
        worker.ready_at = trio.current_time()
        logger.info("worker %d serving (pid %d)", slot.number, worker.pid)
        return worker

    async def _reap(self, worker: _Worker, signum: int | None = None) -> None:
        """Wait for *worker* to exit (sending *signum* first, if given) and close its channel."""
        if signum is not None and worker.process.returncode is None:
            worker.stop(signum)
        await worker.process.wait()
        self._live.discard(worker)
        await worker.channel.aclose()

    def _slot_started(self) -> None:
        self._starting -= 1
        if not self._starting:
            self._all_started.set()

    async def keep(self, slot: _Slot) -> None:
        """Keep a worker serving in *slot* until the supervisor stops.

        Counts as started once its first worker serves (or the run is stopping). A first worker
        that cannot start stops the whole run (the app cannot start: :exc:`StartupError`); later
        deaths are restarted with back-off.
        """
        first = True
        while not self.stopping:
            worker = slot.worker
            if worker is None or worker.process.returncode is not None:
                worker = await self.spawn(slot)
                if worker is None:
                    if self.stopping:
                        break
                    if first:
                        raise StartupError(f"worker {slot.number} could not start (its log above says why)")
                    delay = slot.delays.next_delay()
                    logger.warning("restarting worker %d in %.1f s", slot.number, delay)
                    await trio.sleep(delay)
                    continue
                # A rolling restart may have filled the slot meanwhile: then this one goes.
                if slot.worker is not None and slot.worker.process.returncode is None:
                    await self._reap(worker, signal.SIGTERM)
                    continue
                slot.worker = worker
            if first:
                first = False
                self._slot_started()
            await self._watch(slot, worker)
        if first:
            self._slot_started()

    async def _watch(self, slot: _Slot, worker: _Worker) -> None:
        """Wait until *slot*'s worker exits: expected (a stop, a rolling restart) or a death."""
        while True:
            await self._reap(worker)
            if self.stopping:
                return
            if worker.retiring or slot.worker is not worker:
                # A rolling restart replaced it: watch its successor.
                worker = slot.worker if slot.worker is not None else worker
                if worker.process.returncode is None:
                    continue
                return
            served = trio.current_time() - worker.ready_at
            if served >= HEALTHY_AFTER:
                slot.delays.reset()
            delay = slot.delays.next_delay()
            logger.error(
                "worker %d (pid %d) died: %s after %.1f s; restarting in %.1f s",
                slot.number,
                worker.pid,
                exit_reason(worker.process.returncode or 0),
                served,
                delay,
            )
            slot.worker = None
            await trio.sleep(delay)
            return

    async def roll(self) -> None:
        """Replace every worker, one at a time: each new one serves before the old one drains."""
        logger.info("SIGHUP: replacing %d workers one at a time", len(self.slots))
        for slot in self.slots:
            if self.stopping:
                return
            new = await self.spawn(slot)
            if new is None:
                logger.error("rolling restart stopped: a new worker %d could not start", slot.number)
                return
            old, slot.worker = slot.worker, new
            if old is not None:
                old.stop()
                await old.process.wait()
        logger.info("rolling restart done")

    def stop_all(self, signum: int) -> None:
        """Send *signum* to every live worker (SIGTERM drains; a second one stops them at once)."""
        self.stopping = True
        for worker in list(self._live):
            worker.stop(signum)

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if self.started and not self.stopping and self._nursery is not None:
                    self._nursery.start_soon(self.roll)
                else:
                    logger.warning(
                        "%s ignored: the workers are %s", name, "stopping" if self.stopping else "starting"
                    )
            elif not self.stopping:
                logger.info("%s: draining %d workers (a second signal stops at once)", name, len(self._live))
                self.stop_all(signal.SIGTERM)
            else:
                logger.warning("%s again: stopping every worker now", name)
                self.stop_all(signal.SIGTERM)  # a worker's second signal stops it at once
                logging.shutdown()
                os._exit(1)

    async def run(self) -> None:
        """Start the workers, log the start-up line, act on signals; return once all have exited."""
        url = socket_url(self.sock)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._on_signals, signals)
                async with trio.open_nursery() as workers:
                    # Started side by side; the line below waits for every first worker.
                    for slot in self.slots:
                        workers.start_soon(self.keep, slot)
                    await self._all_started.wait()
                    if not self.stopping:
                        self.started = True
                        logger.info("trionos listening on %s with %d workers", url, len(self.slots))
                        logger.info(
                            "each worker has its own rooms and hub: rooms span the workers only "
                            "through a shared broker (RedisBroker; docs/scale-out.md)"
                        )
                nursery.cancel_scope.cancel()
        logger.info("trionos stopped")


def supervise(settings: RunSettings, sock: socket.socket) -> None:
    """Run the supervisor for *settings.workers* workers on *sock* until a signal stops it.

    Raises:
        StartupError: a worker could not start.
    """
    try:
        trio.run(Supervisor(settings, sock).run)
    except BaseExceptionGroup as group:
        rest = group.split(StartupError)
        if rest[0] is not None and rest[1] is None:
            first: BaseException = rest[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise StartupError(str(first)) from None
        raise
