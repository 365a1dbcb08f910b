"""What the hub counts into its Metrics: broadcast traffic per batch, drops, and the old attributes."""

from __future__ import annotations

import trio
import trio.testing

import trionos
from trionos._frames import message_frame
from trionos.testing import open_memory_server


async def test_a_batched_burst_counts_every_message_for_every_recipient(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Ten broadcasts joined into one fan-out write to three members count 30 messages out, and
    their frame bytes times three, in the metrics the hub was given."""
    metrics = trionos.Metrics()
    hub = trionos.Hub(metrics=metrics)
    joined = trio.Semaphore(0)

    async def handler(req: trionos.Request) -> None:
        ws = await req.accept()
        async with hub.client(ws) as client:
            hub.join(client, "room")
            joined.release()
            async for _ in ws:
                pass

    async with hub, open_memory_server(handler, heartbeat=None) as app:
        async with app.connect() as a, app.connect() as b, app.connect() as c:
            for _ in range(3):
                await joined.acquire()
            texts = [f"message {i}" for i in range(10)]
            for text in texts:
                await hub.broadcast("room", text)
            for ws in (a, b, c):
                assert [await ws.recv() for _ in texts] == texts
    assert hub.metrics is metrics
    assert metrics.messages_out == 30
    assert metrics.bytes_out == 3 * sum(len(message_frame(text)) for text in texts)


def test_old_counter_attributes_read_from_the_metrics() -> None:
    """hub.slow_clients_dropped and hub.remote_frames_dropped still work, read from hub.metrics."""
    hub = trionos.Hub()
    hub.metrics.slow_client_disconnects = 2
    hub.metrics.remote_frames_dropped = 5
    assert (hub.slow_clients_dropped, hub.remote_frames_dropped) == (2, 5)
    assert trionos.Hub().metrics is not hub.metrics  # a fresh Metrics per hub by default
