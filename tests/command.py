"""Run the ``trionos`` command in a real subprocess and follow its log, line by line.

Tests synchronise on what the command logs (``trionos listening on URL``, ``worker 1 serving
(pid P)``...), never on sleeps: :meth:`Command.expect` waits for the next line matching a pattern.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.helpers import read_all

ROOT = Path(__file__).resolve().parents[1]
#: The console script pip installed next to the interpreter.
SCRIPT = Path(sys.executable).parent / "trionos"
#: Starting Python, importing the app and binding, on a loaded machine.
START_TIMEOUT = 30.0
LISTENING = re.compile(r"trionos listening on (http://[^/\s]+/)")
WORKER = re.compile(r"worker (\d+) serving \(pid (\d+)\)")


class Command:
    """A running ``trionos`` process and everything it has written to stderr so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._seen = 0  # lines already matched by expect()
        self._changed = trio.Event()
        #: Set once every process holding the log's pipe has closed it (all of them exited).
        self.log_closed = trio.Event()
        self.url = ""
        self.port = 0

    def log(self) -> str:
        """Everything written so far (for failure messages)."""
        return "\n".join(self.lines)

    async def _read(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete)
            self._changed.set()
            self._changed = trio.Event()
        if buffer:
            self.lines.append(buffer.decode(errors="replace"))
        self.log_closed.set()
        self._changed.set()

    async def expect(self, pattern: str | re.Pattern[str], within: float = START_TIMEOUT) -> re.Match[str]:
        """The next line (after those already matched) that matches *pattern*."""
        regex = re.compile(pattern)
        with trio.fail_after(within):
            while True:
                while self._seen < len(self.lines):
                    line = self.lines[self._seen]
                    self._seen += 1
                    if match := regex.search(line):
                        return match
                if self.process.returncode is not None and self._changed.is_set():
                    raise AssertionError(
                        f"exited with {self.process.returncode} before {pattern!r}:\n{self.log()}"
                    )
                await self._changed.wait()

    async def started(self) -> str:
        """Wait for the start-up line; return the URL and remember it and the port."""
        self.url = (await self.expect(LISTENING)).group(1)
        self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
        return self.url

    def signal(self, signum: int) -> None:
        """Send *signum* to the command's process."""
        self.process.send_signal(signum)

    async def wait(self, within: float = START_TIMEOUT) -> int:
        """Wait for the process to exit and its log to end (every line read); its status."""
        with trio.fail_after(within):
            status = await self.process.wait()
            await self.log_closed.wait()
        return status


def python_m(*args: str) -> list[str]:
    """``python -m trionos ARGS``."""
    return [sys.executable, "-m", "trionos", *args]


@asynccontextmanager
async def open_command(argv: Sequence[str], env: dict[str, str] | None = None) -> AsyncIterator[Command]:
    """Start *argv* in the repository's root; on exit, stop it (SIGKILL if it is still running)."""
    process = await trio.lowlevel.open_process(
        list(argv),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    command = Command(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(command._read)
            try:
                yield command
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await process.wait()
    finally:
        if process.returncode is None:
            process.kill()


async def run_to_end(
    argv: Sequence[str], within: float = START_TIMEOUT, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run *argv* (in *env*) to its end; its exit status and stderr."""
    with trio.fail_after(within):
        result = await trio.run_process(
            list(argv), cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False, env=env
        )
    return result.returncode, result.stderr.decode(errors="replace")


async def http_get(port: int, path: str = "/") -> tuple[int, str]:
    """One HTTP/1.1 GET on 127.0.0.1:*port*; the status and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await read_all(stream)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()
