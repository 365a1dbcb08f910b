"""Issue #25, findings 5 and 9: what joins and idle rooms do to a hub's in-memory history.

    python bench/adversarial_history.py

In this process, no socket (a hub's history needs none; virtual time for the idle part):

* **joins**: a room gets 10 messages, then 10,100 fresh rooms are joined (a join of a room with
  history reads its position, as ``join_with_history`` does). Reported: whether the first room
  still has its messages and its epoch.
* **total**: 900 rooms each get 1 MiB of messages (16 of 64 KiB). Reported: the process's
  resident memory growth.
* **idle**: then 20 s, and again 20 minutes, of virtual time pass with no client; the rooms
  still holding their messages are counted (``recover`` from offset 0 of each room's epoch).
"""

from __future__ import annotations

import time

import trio
import trio.testing

import trionos


def rss_mb() -> float:
    """The resident set size of this process, in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


async def main() -> None:
    """Run the three parts and print their figures."""
    async with trionos.Hub(history=True) as hub:
        for n in range(10):
            await hub.broadcast("kept", f"message {n}")
        before = hub.position("kept")
        started = time.perf_counter()
        for n in range(10_100):
            hub.position(f"joined-{n}")
        after = hub.position("kept")
        print(
            f"joins: 10,100 fresh rooms joined in {time.perf_counter() - started:.2f} s; the room with 10 "
            f"messages: {before} -> {after} ({'kept' if before == after else 'LOST its history and epoch'})"
        )
    async with trionos.Hub(history=True) as hub:
        base = rss_mb()
        chunk = "x" * (64 << 10)
        for room in range(900):
            for _ in range(16):
                await hub.broadcast(f"room-{room}", chunk)
        print(f"total: 900 rooms x 1 MiB: resident memory +{rss_mb() - base:.0f} MB")
        for wait in (20, 20 * 60):
            await trio.sleep(wait)
            holding = sum(1 for room in range(900) if (hub.position(f"room-{room}") or ZERO).offset)
            print(
                f"idle: after {wait} s of virtual time, {holding} of 900 rooms still hold a history "
                f"(epoch and offset); resident memory +{rss_mb() - base:.0f} MB"
            )


ZERO = trionos.Position("", 0)

if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
