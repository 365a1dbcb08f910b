"""Big rooms: a broadcast does not copy the room's members; the copy is made once per join or leave."""

from __future__ import annotations

import trio
import trio.testing

import trionos
from trionos.testing import open_memory_server, open_raw_peer


async def test_broadcasts_share_one_member_snapshot_until_the_membership_changes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Broadcasts to an unchanged room get the same recipients tuple (no per-message copy, and the
    fan-out joins them by identity); leaving out the sender keeps join order; a join or a leave
    makes a new snapshot."""
    hub = trionos.Hub()
    clients: list[trionos.Client] = []
    joined = trio.Semaphore(0)

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            hub.join(client, "room")
            clients.append(client)
            joined.release()
            async for _ in ws:
                pass

    async with hub, open_memory_server(handler, heartbeat=None) as app:
        async with app.connect(), app.connect(), app.connect(), app.connect():
            for _ in range(4):
                await joined.acquire()
            a, b, c, d = clients
            everyone = hub._feeds.recipients("room", None)
            assert everyone == (a, b, c, d)
            assert hub._feeds.recipients("room", None) is everyone
            assert hub._feeds.recipients("room", d) == (a, b, c)  # the newest member: its own "joined"
            assert hub._feeds.recipients("room", b) == (a, c, d)
            assert hub._feeds.recipients("room", a) == (b, c, d)
            assert hub._feeds.recipients("room", None) is everyone
            hub.leave(c, "room")
            assert hub._feeds.recipients("room", None) == (a, b, d)
            assert hub._feeds.recipients("room", b) == (a, d)
            hub.join(c, "room")
            assert hub._feeds.recipients("room", None) == (a, b, d, c)
            assert hub._feeds.recipients("room", a) == (b, d, c)


async def test_frames_for_a_member_whose_peer_is_gone_are_dropped_not_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A member whose peer vanished, while its handler is still registered, gets nothing queued:
    on a stream without a socket (TLS, memory) the frames used to go to its outbox, each time."""
    hub = trionos.Hub()
    clients: dict[str, trionos.Client] = {}
    hold = trio.Event()

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            hub.join(client, "room")
            clients[req.path] = client
            await hold.wait()  # registered, busy elsewhere: it does not notice the peer leave

    async with hub, open_memory_server(handler, heartbeat=None) as app:
        async with open_raw_peer(app, "/gone") as peer:
            await trio.testing.wait_all_tasks_blocked()
            await peer.abort()
        gone = clients["/gone"]
        # Nobody receives on it: the server notices the reset at its next keeper tick (<= 1 s of
        # virtual time), while the handler is still registered.
        with trio.fail_after(5):
            while not gone.ws.closed:  # noqa: ASYNC110 (virtual time: no event marks the keeper tick)
                await trio.sleep(0.1)
        assert "/gone" in clients and not hold.is_set()
        for _ in range(20):
            await hub.broadcast("room", "x" * 1000)
        await trio.testing.wait_all_tasks_blocked()
        assert gone.ws.transport.peak_outbox_bytes == 0
        hold.set()
