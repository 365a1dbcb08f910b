"""The room chat page in a real browser: Playwright driving Debian's chromium (``make test`` installs both).

The server (``examples/room_chat.py``'s handler and hub, history on) runs in a Trio loop in a helper
thread, behind a cutting proxy on 127.0.0.1; the browser loads the page through the proxy. The test
drives the page through join, chat, a dropped connection (the proxy cuts it while the server stays
up), a server restart (a new process has a new epoch, so recovery is partial) and leave, and checks
that the console stayed clean. More tests: recent history on a fresh join and after a reload, a
refused message shown as failed, the page mounted under a path prefix by a proxy, and the phone
layout; the last one writes the screenshots in docs/img/. Two more run a server on port 0 behind a
proxy that can lose one WebSocket message on its way to the page: a room's history evicted under a
live page (a new epoch) and a live message lost (a skipped offset), which the page fetches by itself.
Skipped when chromium or playwright is missing.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

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


class OnThread:
    """A chat server in a Trio thread (``port``) and the proxy the page goes through (``proxy``)."""

    trio: TrioThread
    port: int
    proxy: Any

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


class ChatServer(OnThread):
    """room_chat on a fixed port in a Trio thread, restartable, behind a cutting proxy.

    ``hub_options`` go to ``room_chat.make_hub`` (a rate limit, say).
    """

    def __init__(self, **hub_options: Any) -> None:
        self.hub_options = hub_options
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
                async with room_chat.make_hub(**self.hub_options) as hub:
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


class Bob:
    """A Python chat client connected straight to the server (not through the proxy)."""

    def __init__(self, server: OnThread, name: str = "bob", room: str = "tea") -> None:
        self.server = server
        self.name = name
        self.room = room
        self.ws: Any = None
        self.done: trio.Event | None = None

    def connect(self) -> None:
        async def run(task_status: trio.TaskStatus[None]) -> None:
            self.done = trio.Event()
            async with trionos.connect(self.server.ws_url) as ws:
                self.ws = ws
                await ws.send_json({"type": "join", "username": self.name, "room": self.room})
                assert (await ws.recv_json())["type"] == "welcome"
                task_status.started()
                await self.done.wait()

        async def go() -> None:
            await self.server.trio.nursery.start(run)

        self.server.trio.run(go)

    def say(self, text: str) -> None:
        self.server.trio.run(self.ws.send_json, {"type": "chat", "text": text})

    def say_acked(self, text: str) -> dict[str, Any]:
        """Say *text* and wait for the server's ack (so the next step happens after it)."""
        ident = f"{self.name}-{text}"
        self.server.trio.run(self.ws.send_json, {"type": "chat", "text": text, "id": ident})
        return self.expect({"type": "ack", "id": ident})

    def expect(self, wanted: dict[str, Any]) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            with trio.fail_after(WAIT_MS / 1000):
                while True:
                    message: dict[str, Any] = await self.ws.recv_json()
                    if all(message.get(k) == v for k, v in wanted.items()):
                        return message

        return self.server.trio.run(go)

    def close(self) -> None:
        if self.done is not None:
            self.server.trio.run(trio.lowlevel.checkpoint)
            trio.from_thread.run_sync(self.done.set, trio_token=self.server.trio.token)


IMAGES = Path(__file__).resolve().parents[1] / "docs" / "img"


def watch(page: Any, problems: list[str]) -> None:
    """Note in *problems* every console error or warning, page error, HTTP error and failed request."""

    def console(message: Any) -> None:
        if message.type in ("error", "warning"):
            problems.append(message.text)

    def response(answer: Any) -> None:
        if answer.status >= 400:
            problems.append(f"{answer.status} {answer.url}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", response)
    page.on("requestfailed", lambda request: problems.append(f"failed {request.url}"))


@contextmanager
def browser_page(tmp_path: Path, problems: list[str], **context_options: Any) -> Iterator[Any]:
    """A chromium page with a fresh profile, watched for problems (:func:`watch`)."""
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True, **context_options
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            watch(page, problems)
            yield page
        finally:
            context.close()


S = TypeVar("S", bound=OnThread)


@contextmanager
def running(server: S) -> Iterator[S]:
    """*server* for the block; its Trio thread (server, proxy, clients) stops after it."""
    try:
        yield server
    finally:
        server.trio.stop()


def chat_server(**hub_options: Any) -> AbstractContextManager[ChatServer]:
    return running(ChatServer(**hub_options))


def test_the_page_chats_recovers_after_a_drop_and_reports_a_partial_recovery(tmp_path: Path) -> None:
    """Join, chat, a cut connection (every missed message shown once), a restart (partial), leave;
    the console stays clean and nothing is requested that 404s (no /favicon.ico)."""
    problems: list[str] = []
    with chat_server() as server, browser_page(tmp_path, problems) as page:
        run_scenario(page, server, tmp_path)
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


def join(page: Any, url: str, name: str = "ann", room: str = "tea") -> None:
    page.goto(url)
    page.fill("#name", name)
    page.fill("#room", room)
    page.click("#joinBtn")
    sync_api.expect(page.locator("#log")).to_contain_text(f"as {name}.", timeout=WAIT_MS)


def texts(page: Any) -> list[str]:
    """The chat messages' texts, in log order."""
    return [str(t) for t in page.locator("#log .msg .text").all_text_contents()]


def times(page: Any) -> list[str]:
    """The datetime of each chat message's <time>, in log order."""
    return [str(t.get_attribute("datetime")) for t in page.locator("#log .msg time").all()]


def test_recent_history_on_a_fresh_join_and_after_a_reload(tmp_path: Path) -> None:
    """A fresh join shows the room's recent messages with their server times, before the join line; a
    reload after time away shows them again plus what was said meanwhile, each once, in order, same
    times, and no false alarm; a room switch shows the other room's, and switching back tea's again."""
    problems: list[str] = []
    with chat_server() as server, browser_page(tmp_path, problems) as page:
        bob = Bob(server)
        bob.connect()
        for i in range(1, 4):
            bob.say(f"earlier {i}")
        join(page, server.page_url)
        expect = sync_api.expect
        expect(page.locator("#log .msg")).to_have_count(3, timeout=WAIT_MS)
        earlier = ["earlier 1", "earlier 2", "earlier 3"]
        assert texts(page) == earlier
        # The history is above the join line: the log reads in time order.
        expect(page.locator("#log > *").last).to_have_class("sys join")
        expect(page.locator("#log > *").last).to_contain_text("You joined #tea as ann.")
        page.fill("#msg", "hi bob")
        page.click("#sendBtn")
        expect(page.locator('#log .msg.mine[data-state="sent"]')).to_have_count(1, timeout=WAIT_MS)
        bob.expect({"type": "message", "from": "ann", "text": "hi bob"})
        before = times(page)
        assert len(before) == 4 and all(before)

        page.goto("about:blank")  # the page is away (the same tab: its sessionStorage stays)
        bob.expect({"type": "left", "username": "ann"})
        bob.say("while away 1")
        bob.say("while away 2")
        page.goto(server.page_url)
        expect(page.locator("#log")).to_contain_text("Back in #tea as ann.", timeout=WAIT_MS)
        expect(page.locator("#log .msg")).to_have_count(6, timeout=WAIT_MS)
        assert texts(page) == [*earlier, "hi bob", "while away 1", "while away 2"]
        assert times(page)[:4] == before  # replayed messages keep the server's time
        expect(page.locator("#log .msg.mine")).to_have_count(1)  # our own, from the history
        expect(page.locator(".sys.warn")).to_have_count(0)
        bob.say("live")
        expect(page.locator("#log .msg", has_text="live")).to_have_count(1, timeout=WAIT_MS)

        # A room switch: the log is the new room's; switching back shows tea's recent history again.
        page.fill("#room", "coffee")
        page.click("#joinBtn")
        expect(page.locator("#log")).to_contain_text("You joined #coffee as ann.", timeout=WAIT_MS)
        expect(page.locator("#log .msg")).to_have_count(0)
        page.fill("#room", "tea")
        page.click("#joinBtn")
        expect(page.locator("#log")).to_contain_text("You joined #tea as ann.", timeout=WAIT_MS)
        expect(page.locator("#log .msg")).to_have_count(7, timeout=WAIT_MS)
        assert texts(page) == [*earlier, "hi bob", "while away 1", "while away 2", "live"]
        bob.close()
    assert problems == []


def test_your_own_messages_are_part_of_the_recent_history(tmp_path: Path) -> None:
    """After a reload, the recent history shows your own earlier messages too, where they were said."""
    problems: list[str] = []
    with chat_server() as server, browser_page(tmp_path, problems) as page:
        bob = Bob(server)
        bob.connect()
        join(page, server.page_url)
        page.fill("#msg", "mine")
        page.click("#sendBtn")
        bob.expect({"type": "message", "from": "ann", "text": "mine"})
        bob.say("theirs")
        sync_api.expect(page.locator("#log .msg")).to_have_count(2, timeout=WAIT_MS)
        page.reload()
        sync_api.expect(page.locator("#log")).to_contain_text("Back in #tea as ann.", timeout=WAIT_MS)
        sync_api.expect(page.locator("#log .msg")).to_have_count(2, timeout=WAIT_MS)
        assert texts(page) == ["mine", "theirs"]
        bob.close()
    assert problems == []


def test_a_refused_message_is_shown_as_failed_with_the_reason(tmp_path: Path) -> None:
    """Over the rate limit, the server's error (carrying the message's id) turns that bubble to failed."""
    problems: list[str] = []
    # Three messages at once (the join is one of them), and next to no refill while the test runs.
    limit = trionos.RateLimit(0.001, burst=3)
    with chat_server(rate_limit=limit) as server, browser_page(tmp_path, problems) as page:
        join(page, server.page_url)
        for i in range(1, 4):
            page.fill("#msg", f"quick {i}")
            page.click("#sendBtn")
        expect = sync_api.expect
        failed = page.locator('#log .msg[data-state="failed"]')
        expect(failed).to_have_count(1, timeout=WAIT_MS)
        expect(failed).to_contain_text("quick 3")
        expect(failed.locator(".reason")).to_have_text("too many messages: slow down")
        expect(failed.locator(".state")).to_have_text("Not sent")
        expect(failed.get_by_role("button", name="Send again")).to_be_visible()
        expect(page.locator('#log .msg[data-state="sent"]')).to_have_count(2)
    assert problems == []


async def pipe(source: trio.SocketStream, sink: trio.SocketStream, data: bytes = b"") -> None:
    """*data*, then what *source* sends, to *sink*; closes *sink* when *source* ends."""
    try:
        if data:
            await sink.send_all(data)
        while chunk := await source.receive_some(65536):
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    with trio.CancelScope(shield=True):
        await sink.aclose()


class Mount:
    """A proxy on 127.0.0.1 that mounts the server under /chat/, as a site's reverse proxy would.

    ``/chat`` is redirected to ``/chat/``; ``/chat/X`` is forwarded to the server as ``/X`` (plain
    requests and WebSocket upgrades alike, then bytes both ways); anything else is 404.
    """

    PREFIX = b"/chat/"

    def __init__(self, server: ChatServer) -> None:
        self.server = server
        self.port = 0

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, client: trio.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await client.receive_some(65536)
                if not chunk:
                    return
                head += chunk
            method, target, rest = head.split(b" ", 2)
            if target == self.PREFIX.rstrip(b"/"):
                await client.send_all(
                    b"HTTP/1.1 301 Moved Permanently\r\nLocation: /chat/\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
                return
            if not target.startswith(self.PREFIX):
                await client.send_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            upstream = await trio.open_tcp_stream("127.0.0.1", self.server.port)
            async with upstream:
                await upstream.send_all(b" ".join([method, target[len(self.PREFIX) - 1 :], rest]))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pipe, client, upstream)
                    nursery.start_soon(pipe, upstream, client)


def test_the_page_works_under_a_path_prefix(tmp_path: Path) -> None:
    """Mounted at /chat/ by a proxy, the page loads trionos.js and opens its socket under the prefix."""
    problems: list[str] = []
    requested: list[str] = []
    with chat_server() as server, browser_page(tmp_path, problems) as page:
        mount = Mount(server)
        server.trio.run(server.trio.nursery.start, mount.run)
        page.on("request", lambda r: requested.append(r.url))
        page.on("websocket", lambda ws: requested.append(ws.url))
        base = f"127.0.0.1:{mount.port}/chat/"
        join(page, f"http://127.0.0.1:{mount.port}/chat")  # redirected to /chat/
        bob = Bob(server)
        bob.connect()
        page.fill("#msg", "through the mount")
        page.click("#sendBtn")
        bob.expect({"type": "message", "from": "ann", "text": "through the mount"})
        sync_api.expect(page.locator('#log .msg[data-state="sent"]')).to_have_count(1, timeout=WAIT_MS)
        bob.close()
    assert f"http://{base}trionos.js" in requested
    assert f"ws://{base}" in requested
    assert problems == []


def test_phone_layout_gives_the_messages_three_quarters_and_the_screenshots(tmp_path: Path) -> None:
    """At 390x844, once joined the message list takes at least 75 % of the height; the run writes the
    desktop and phone screenshots of docs/img/."""
    problems: list[str] = []
    with chat_server() as server:
        bob, cleo = Bob(server), Bob(server, "cleo")
        bob.connect()
        cleo.connect()
        bob.say("Morning! Did the deploy go out?")
        cleo.say("Yes, 10:02. Dashboards look calm.")
        bob.say("Nice. Anyone seen the flaky reconnect test today?")
        for name, viewport in (
            ("desktop", {"width": 1200, "height": 700}),
            ("phone", {"width": 390, "height": 844}),
        ):
            with browser_page(tmp_path / name, problems, viewport=viewport) as page:
                join(page, server.page_url, name="ann")
                # The phone joins as ann too: the history has what ann said on the desktop.
                history = 3 if name == "desktop" else 4
                sync_api.expect(page.locator("#log .msg")).to_have_count(history, timeout=WAIT_MS)
                page.fill(
                    "#msg",
                    "Not since the back-off got its jitter." if name == "desktop" else "On my phone now",
                )
                page.click("#sendBtn")
                sync_api.expect(page.locator("#log .msg.mine").last).to_have_attribute(
                    "data-state", "sent", timeout=WAIT_MS
                )
                if name == "phone":
                    log = page.locator("#log").bounding_box()
                    assert log is not None
                    assert log["height"] / 844 >= 0.75, log
                    assert page.locator("#joinForm").is_hidden()
                    page.click("#panelBtn")  # the folded panel opens on demand
                    sync_api.expect(page.locator("#joinForm")).to_be_visible()
                    page.click("#panelBtn")
                    sync_api.expect(page.locator("#joinForm")).to_be_hidden()
                page.fill("#msg", "")
                page.screenshot(path=str(IMAGES / f"room_chat_{name}.png"))
                page.goto("about:blank")
        bob.close()
        cleo.close()
    assert problems == []


class LosingProxy:
    """A proxy on 127.0.0.1 port 0 in front of the server that can lose WebSocket messages and cut.

    Bytes go through unchanged, except on a WebSocket connection: the server's text frames (the
    server sends unmasked, uncompressed frames: room_chat offers no compression) are parsed, and
    one whose payload contains a marker in ``lose`` is not forwarded (each marker once; the lost
    payloads are kept in ``lost``), as a message lost between a broker and a node would be.
    ``cut()`` closes every connection through it, as a network drop does.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.lose: set[bytes] = set()
        self.lost: list[bytes] = []
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    def cut(self) -> int:
        for scope in self._scopes:
            scope.cancel()
        return len(self._scopes)

    async def handle(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client, await trio.open_tcp_stream("127.0.0.1", self.upstream) as upstream:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(pipe, client, upstream)
                        nursery.start_soon(self._down, upstream, client)
            finally:
                self._scopes.discard(scope)

    async def _down(self, server: trio.SocketStream, browser: trio.SocketStream) -> None:
        """Server to browser: the response head as is; after a 101, frame by frame."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await server.receive_some(65536)
            if not chunk:
                await browser.aclose()
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        await browser.send_all(head + b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            await pipe(server, browser, data)
            return
        try:
            while True:
                frame = _frame(data)
                if frame is None:
                    chunk = await server.receive_some(65536)
                    if not chunk:
                        break
                    data += chunk
                    continue
                size, opcode, payload = frame
                data, whole = data[size:], data[:size]
                marker = next((m for m in self.lose if m in payload), None) if opcode == 1 else None
                if marker is None:
                    await browser.send_all(whole)
                else:
                    self.lose.discard(marker)
                    self.lost.append(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.CancelScope(shield=True):
            await browser.aclose()


def _frame(data: bytes) -> tuple[int, int, bytes] | None:
    """The first whole WebSocket frame in *data*: (its size, its opcode, its payload), or None."""
    if len(data) < 2:
        return None
    length, start = data[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(data[2:4]), 4
    elif length == 127:
        length, start = int.from_bytes(data[2:10]), 10
    if data[1] & 0x80:
        start += 4  # masked (never from a server; counted for completeness)
    if len(data) < start + length:
        return None
    return start + length, data[0] & 0x0F, data[start : start + length]


class LiveChat(OnThread):
    """room_chat on 127.0.0.1 port 0 in a Trio thread, the page served through a LosingProxy."""

    def __init__(self, **hub_options: Any) -> None:
        self.trio = TrioThread()
        server: trionos.Server = self.trio.run(self.trio.nursery.start, self._serve, hub_options)
        self.port = server.port
        self.proxy = LosingProxy(self.port)
        self.trio.run(self.trio.nursery.start, self.proxy.run)

    @staticmethod
    async def _serve(hub_options: dict[str, Any], task_status: trio.TaskStatus[trionos.Server]) -> None:
        async with room_chat.make_hub(**hub_options) as hub:
            await trionos.serve(0, room_chat.make_handler(hub), host="127.0.0.1", task_status=task_status)

    def lose(self, marker: bytes) -> None:
        """Lose the next server message to the page that contains *marker*."""

        async def go() -> None:
            self.proxy.lose.add(marker)

        self.trio.run(go)


def live_chat(**hub_options: Any) -> AbstractContextManager[LiveChat]:
    return running(LiveChat(**hub_options))


def test_a_room_evicted_under_a_live_page_shows_every_new_message_once(tmp_path: Path) -> None:
    """One room of history: a message in another room evicts tea's, whose offsets restart at 1 in a
    new epoch, and the first of them is lost on its way; the page shows every message once (the lost
    one fetched by itself, in its place), and after a cut its rejoin replays none twice."""
    problems: list[str] = []
    expect = sync_api.expect
    one_room = trionos.HistoryBounds(max_rooms=1)
    with live_chat(history=one_room) as chat, browser_page(tmp_path, problems) as page:
        join(page, chat.page_url)
        bob, cleo = Bob(chat), Bob(chat, "cleo", room="coffee")
        bob.connect()
        cleo.connect()
        expect(page.locator("#log")).to_contain_text("bob joined", timeout=WAIT_MS)
        before = [f"before {i}" for i in range(1, 4)]
        for text in before:
            bob.say(text)
        expect(page.locator("#log .msg")).to_have_count(3, timeout=WAIT_MS)
        cleo.say_acked("elsewhere")  # coffee's history evicts tea's
        after = [f"after {i}" for i in range(1, 6)]
        chat.lose(b"after 1")  # and the new epoch's first message is lost on its way to the page
        assert bob.say_acked(after[0])["offset"] == 1  # tea's history restarted
        for text in after[1:]:
            bob.say(text)
        expect(page.locator("#log .msg")).to_have_count(8, timeout=WAIT_MS)
        assert texts(page) == before + after
        assert len(chat.proxy.lost) == 1
        assert chat.cut() >= 1
        expect(page.locator(".sys.join", has_text="Back in #tea")).to_have_count(1, timeout=WAIT_MS)
        bob.say("live again")
        expect(page.locator("#log .msg", has_text="live again")).to_have_count(1, timeout=WAIT_MS)
        assert texts(page) == [*before, *after, "live again"]
        expect(page.locator(".sys.warn")).to_have_count(0)
        bob.close()
        cleo.close()
    assert problems == []


def test_a_live_message_lost_on_its_way_is_fetched_by_the_page_and_shown_once(tmp_path: Path) -> None:
    """The proxy loses one live message: the page sees the skipped offset, rejoins since the last
    message before it by itself, and shows the lost one once, in its place; nothing is shown twice."""
    problems: list[str] = []
    sockets: list[str] = []
    expect = sync_api.expect
    with live_chat() as chat, browser_page(tmp_path, problems) as page:
        page.on("websocket", lambda ws: sockets.append(ws.url))
        join(page, chat.page_url)
        bob = Bob(chat)
        bob.connect()
        expect(page.locator("#log")).to_contain_text("bob joined", timeout=WAIT_MS)
        bob.say("one")
        expect(page.locator("#log .msg", has_text="one")).to_have_count(1, timeout=WAIT_MS)
        chat.lose(b"lost on its way")
        bob.say("two, lost on its way")
        bob.say("three")
        expect(page.locator("#log .msg")).to_have_count(3, timeout=WAIT_MS)
        assert texts(page) == ["one", "two, lost on its way", "three"]
        assert len(chat.proxy.lost) == 1 and b'"offset":2' in chat.proxy.lost[0]
        bob.say("four")
        expect(page.locator("#log .msg", has_text="four")).to_have_count(1, timeout=WAIT_MS)
        assert texts(page) == ["one", "two, lost on its way", "three", "four"]
        expect(page.locator(".sys.warn")).to_have_count(0)
        expect(page.locator(".sys.join")).to_have_count(2)  # "You joined", "bob joined": no "Back in"
        bob.close()
    assert len(sockets) == 1  # fetched over the same connection, not by reconnecting
    assert problems == []
