"""The room chat page in a real browser: Playwright driving Debian's chromium (``make test`` installs both).

The server (``examples/room_chat.py``'s handler and hub, history on) runs in a Trio loop in a helper
thread, behind a cutting proxy on 127.0.0.1; the browser loads the page through the proxy. The test
drives the page through join, chat, a dropped connection (the proxy cuts it while the server stays
up), a server restart (a new process has a new epoch, so recovery is partial) and leave, and checks
that the console stayed clean. Skipped when chromium or playwright is missing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trionos
from tests.helpers import TrioThread
from tests.redis_server import free_port
from trionos.testing import open_cutting_proxy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="`make test` installs playwright")
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (`make test` installs it)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import room_chat  # noqa: E402

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Browser-side waits (milliseconds): reconnecting takes at most the page's first backoff (0.5 s).
WAIT_MS = 10_000


class ChatServer:
    """room_chat on a fixed port in a Trio thread, restartable, behind a cutting proxy."""

    def __init__(self) -> None:
        self.trio = TrioThread()
        self.port = free_port()
        self.scope: trio.CancelScope | None = None
        self.stopped: trio.Event | None = None
        self.proxy: Any = None
        self.trio.run(self._start_proxy)
        self.start()

    async def _start_proxy(self) -> None:
        self.proxy = await self.trio.nursery.start(self._run_proxy)

    async def _run_proxy(self, task_status: trio.TaskStatus[Any]) -> None:
        async with open_cutting_proxy(self.port, patience=5.0) as proxy:
            task_status.started(proxy)
            await trio.sleep_forever()

    async def _serve(self, task_status: trio.TaskStatus[trionos.Server]) -> None:
        self.stopped = trio.Event()
        with trio.CancelScope() as self.scope:
            try:
                async with room_chat.make_hub() as hub:
                    await trionos.serve(
                        self.port, room_chat.make_handler(hub), host="127.0.0.1", task_status=task_status
                    )
            finally:
                self.stopped.set()

    def start(self) -> None:
        """Start a fresh server process stand-in: a new hub, so new epochs."""

        async def go() -> None:
            await self.trio.nursery.start(self._serve)

        self.trio.run(go)

    def stop(self) -> None:
        async def go() -> None:
            assert self.scope is not None and self.stopped is not None
            self.scope.cancel()
            await self.stopped.wait()

        self.trio.run(go)

    def cut(self) -> int:
        """Cut every connection through the proxy (in the Trio thread, where it runs)."""

        async def go() -> int:
            return int(self.proxy.cut())

        return self.trio.run(go)

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


class Bob:
    """A Python chat client connected straight to the server (not through the proxy)."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.ws: Any = None
        self.done: trio.Event | None = None

    def connect(self) -> None:
        async def run(task_status: trio.TaskStatus[None]) -> None:
            self.done = trio.Event()
            async with trionos.connect(self.server.ws_url) as ws:
                self.ws = ws
                await ws.send_json({"type": "join", "username": "bob", "room": "tea"})
                assert (await ws.recv_json())["type"] == "welcome"
                task_status.started()
                await self.done.wait()

        async def go() -> None:
            await self.server.trio.nursery.start(run)

        self.server.trio.run(go)

    def say(self, text: str) -> None:
        self.server.trio.run(self.ws.send_json, {"type": "chat", "text": text})

    def expect(self, wanted: dict[str, Any]) -> None:
        async def go() -> None:
            with trio.fail_after(WAIT_MS / 1000):
                while True:
                    message = await self.ws.recv_json()
                    if all(message.get(k) == v for k, v in wanted.items()):
                        return

        self.server.trio.run(go)

    def close(self) -> None:
        if self.done is not None:
            self.server.trio.run(trio.lowlevel.checkpoint)
            trio.from_thread.run_sync(self.done.set, trio_token=self.server.trio.token)


def test_the_page_chats_recovers_after_a_drop_and_reports_a_partial_recovery(tmp_path: Path) -> None:
    """Join, chat, a cut connection (every missed message shown once), a restart (partial), leave;
    the console stays clean and nothing is requested that 404s (no /favicon.ico)."""
    server = ChatServer()
    problems: list[str] = []
    try:
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True
            )
            try:
                page = context.new_page()
                page.on(
                    "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
                )
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on(
                    "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
                )
                page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
                run_scenario(page, server, tmp_path)
            finally:
                context.close()
    finally:
        server.trio.stop()
    assert problems == []


def run_scenario(page: Any, server: ChatServer, tmp_path: Path) -> None:
    expect = sync_api.expect
    log = page.locator("#log")
    page.goto(server.page_url)
    page.fill("#name", "ann")
    page.fill("#room", "tea")
    page.click("#joinBtn")
    expect(log).to_contain_text("You joined #tea as ann.", timeout=WAIT_MS)

    bob = Bob(server)
    bob.connect()
    expect(log).to_contain_text("bob joined", timeout=WAIT_MS)
    page.fill("#msg", "hello bob")
    page.click("#sendBtn")
    bob.expect({"type": "message", "from": "ann", "text": "hello bob"})
    bob.say("hi ann")
    expect(log.locator(".msg", has_text="hi ann")).to_have_count(1, timeout=WAIT_MS)

    # The connection drops while the server stays up: bob keeps talking; the page must show it all.
    assert server.cut() >= 1  # the WebSocket (and the page load, if its connection is still open)
    for i in range(1, 4):
        bob.say(f"while away {i}")
    expect(log).to_contain_text("Back in #tea as ann.", timeout=WAIT_MS)
    for i in range(1, 4):
        expect(log.locator(".msg", has_text=f"while away {i}")).to_have_count(1, timeout=WAIT_MS)
    bob.say("live again")
    expect(log.locator(".msg", has_text="live again")).to_have_count(1, timeout=WAIT_MS)
    texts = log.locator(".msg .text").all_text_contents()
    assert texts == ["hello bob", "hi ann", "while away 1", "while away 2", "while away 3", "live again"]
    expect(page.locator(".sys.warn")).to_have_count(0)

    # A restart: a new process has a new epoch, so the page is told recovery was partial.
    bob.close()
    server.stop()
    server.start()
    expect(page.locator(".sys.warn")).to_contain_text("Some messages may be missing", timeout=WAIT_MS)
    expect(page.locator("#members li")).to_have_count(1, timeout=WAIT_MS)

    bob = Bob(server)
    bob.connect()
    expect(log).to_contain_text("bob joined", timeout=WAIT_MS)
    page.click("#leaveBtn")
    bob.expect({"type": "left", "username": "ann"})
    expect(log).to_contain_text("You left #tea.")
    bob.close()
