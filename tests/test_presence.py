"""Presence with metadata: the byte bound, records and envelopes, diffs and snapshots on one hub."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

import trionos
from trionos._broker import (
    Member,
    PresenceDiff,
    decode_member,
    decode_presence_envelope,
    encode_member,
    encode_presence_envelope,
    is_presence_envelope,
    merge_members,
)
from trionos._local_broker import LocalBroker
from trionos._presence import PresenceBook
from trionos.testing import MemoryServer, expect_message, expect_silence, open_memory_server

# --- pure: the bound, the record, the envelope ---------------------------------------------------


def test_metadata_is_bounded_in_bytes_of_json() -> None:
    """Metadata up to the bound is kept as a JSON copy; one byte more is refused with both sizes."""
    book = PresenceBook(LocalBroker(node_id="n"), max_meta_bytes=20)
    meta = {"s": "é" * 6}  # {"s":"éééééé"} is 20 bytes of UTF-8
    kept = book.check(meta)
    assert kept == meta and kept is not meta
    with pytest.raises(ValueError, match=r"at most 20 bytes of JSON, got 21"):
        book.check({"s": "é" * 6 + "x"})
    with pytest.raises(TypeError, match="must be a mapping, got list"):
        book.check([1])  # type: ignore[arg-type]  # what an untyped caller may pass
    with pytest.raises(trionos.EncodeError):
        book.check({"n": float("nan")})
    assert book.check(None) == {}


@pytest.mark.parametrize("meta", [{}, {"status": "away", "n": [1, 2.5, None]}])
def test_member_records_carry_metadata_and_stay_readable_without(meta: dict[str, Any]) -> None:
    """A record with metadata decodes with it; one without keeps the three-item form older nodes wrote."""
    import json

    data = encode_member("n1", "c1", "ann", json.dumps(meta, separators=(",", ":")) if meta else "")
    assert decode_member("r", data, 3) == Member("r", "n1", "c1", "ann", 3, meta)
    if not meta:
        assert data == b'["n1","c1","ann"]'
    with pytest.raises(trionos.BrokerError):
        decode_member("r", b'["n1","c1","ann",[1]]', 0)


@pytest.mark.parametrize("kind", ["join", "leave", "update"])
def test_presence_envelopes_round_trip_as_one_member_diffs(kind: str) -> None:
    """A presence change travels as an envelope of its own kind and decodes to a one-member diff."""
    member = Member("r", "node-b", "c1", None, 4, {"typing": True})
    data = encode_presence_envelope("node-a", kind, member)
    assert is_presence_envelope(data)
    diff = decode_presence_envelope("r", data)
    assert diff == PresenceDiff("r", **{kind + "s": (member,)})
    assert diff.room == "r"


def test_malformed_presence_envelopes_are_refused() -> None:
    """Bytes that are not a presence envelope raise BrokerError, saying so."""
    good = encode_presence_envelope("a", "join", Member("r", "a", "c", None))
    for bad in (b"\x03", good.replace(b'"join"', b'"jump"'), good[:-3], b"\x01\x00\x00\x00"):
        with pytest.raises(trionos.BrokerError, match="malformed presence envelope"):
            decode_presence_envelope("r", bad)


def test_merged_members_keep_the_local_truth_and_the_registry_order() -> None:
    """Local members carry their current metadata at their registry place; stale records of ours go."""
    local = [Member("r", "A", "ann", "ann", 0, {"v": 2}), Member("r", "A", "al", "al")]
    registry = [
        Member("r", "B", "bob", "bob", 2, {"x": 1}),
        Member("r", "A", "ann", "ann", 1, {"v": 1}),
        Member("r", "A", "gone", "gone", 3),
    ]
    merged = merge_members("A", local, registry)
    assert [(m.client_id, m.seq, dict(m.meta)) for m in merged] == [
        ("ann", 1, {"v": 2}),
        ("bob", 2, {"x": 1}),
        ("al", 0, {}),
    ]


# --- one hub ---------------------------------------------------------------------------------------


class Room:
    """A hub and a memory server: ``/name`` registers as client ``name`` with that name (``anon*``: none)."""

    def __init__(self, hub: trionos.Hub, server: MemoryServer) -> None:
        self.hub = hub
        self.server = server
        self.clients: dict[str, trionos.Client] = {}

    async def handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        name = req.path.strip("/")
        async with self.hub.client(
            ws, client_id=name, name=None if name.startswith("anon") else name
        ) as client:
            self.clients[name] = client
            try:
                async for _ in ws:
                    pass
            finally:
                del self.clients[name]


@pytest.fixture
async def room(nursery: trio.Nursery) -> AsyncIterator[Room]:
    hub = await nursery.start(trionos.Hub(max_presence_meta_bytes=64).run)
    holder: list[Room] = []

    async def handler(req: trionos.Request) -> None:
        await holder[0].handler(req)

    async with open_memory_server(handler, heartbeat=None) as server:
        holder.append(Room(hub, server))
        yield holder[0]


async def test_watchers_get_joins_updates_and_leaves_with_metadata(room: Room) -> None:
    """Each join, metadata update, leave and disconnect is one diff, with the member's metadata."""
    hub, diffs = room.hub, list[PresenceDiff]()
    with hub.watch_presence(diffs.append):
        async with room.server.connect("/ann"), room.server.connect("/bob") as bob:
            await trio.testing.wait_all_tasks_blocked()
            ann, bob_c = room.clients["ann"], room.clients["bob"]
            assert hub.join(ann, "r", meta={"status": "here"})
            assert not hub.join(ann, "r", meta={"status": "ignored"})  # a member already
            hub.join(bob_c, "r")
            hub.update_presence(ann, "r", {"status": "away"})
            hub.leave(ann, "r")
            await bob.close()
            await trio.testing.wait_all_tasks_blocked()
    node = hub.node_id
    assert diffs == [
        PresenceDiff("r", joins=(Member("r", node, "ann", "ann", 0, {"status": "here"}),)),
        PresenceDiff("r", joins=(Member("r", node, "bob", "bob"),)),
        PresenceDiff("r", updates=(Member("r", node, "ann", "ann", 0, {"status": "away"}),)),
        PresenceDiff("r", leaves=(Member("r", node, "ann", "ann", 0, {"status": "away"}),)),
        PresenceDiff("r", leaves=(Member("r", node, "bob", "bob"),)),
    ]


async def test_presence_state_lists_every_member_with_metadata_and_presence_stays_names(room: Room) -> None:
    """presence_state lists members (nameless ones too) with metadata; presence() still lists names."""
    hub = room.hub
    async with room.server.connect("/ann"), room.server.connect("/anon"):
        await trio.testing.wait_all_tasks_blocked()
        hub.join(room.clients["ann"], "r", meta={"device": "phone"})
        hub.join(room.clients["anon"], "r")
        state = await hub.presence_state("r")
        assert [(m.client_id, m.name, dict(m.meta)) for m in state] == [
            ("ann", "ann", {"device": "phone"}),
            ("anon", None, {}),
        ]
        assert await hub.presence("r") == ["ann"]
        hub.update_presence(room.clients["ann"], "r", None)
        assert [dict(m.meta) for m in await hub.presence_state("r")] == [{}, {}]


async def test_refused_metadata_changes_nothing(room: Room) -> None:
    """Metadata over the bound, or an update for a non-member, raises and changes no membership."""
    hub, diffs = room.hub, list[PresenceDiff]()
    with hub.watch_presence(diffs.append):
        async with room.server.connect("/ann"):
            await trio.testing.wait_all_tasks_blocked()
            ann = room.clients["ann"]
            with pytest.raises(ValueError, match="at most 64 bytes"):
                hub.join(ann, "r", meta={"big": "x" * 64})
            assert hub.rooms_of(ann) == [] and hub.rooms() == []
            with pytest.raises(ValueError, match="not a member of room 'r'"):
                hub.update_presence(ann, "r", {"a": 1})
    assert diffs == []


async def test_a_failing_watcher_is_logged_and_the_others_still_get_the_diff(
    room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    """A watcher that raises does not stop the join nor the other watchers; the error is logged."""

    def broken(diff: PresenceDiff) -> None:
        raise RuntimeError("watcher bug")

    got: list[PresenceDiff] = []
    with room.hub.watch_presence(broken), room.hub.watch_presence(got.append):
        async with room.server.connect("/ann"):
            await trio.testing.wait_all_tasks_blocked()
            with caplog.at_level(logging.ERROR, logger="trionos.hub"):
                assert room.hub.join(room.clients["ann"], "r")
    assert len(got) == 2  # the join, and the leave on disconnect
    assert "watcher bug" in caplog.text
    room.hub.deliver_presence(PresenceDiff("r"))  # no watcher left: nothing happens
    assert len(got) == 2


async def test_a_watcher_tells_local_members_with_broadcast_local_nowait(room: Room) -> None:
    """A watcher can queue a message to the room's local members without waiting, the new one excluded."""
    hub = room.hub

    def announce(diff: PresenceDiff) -> None:
        for member in diff.joins:
            hub.broadcast_local_nowait(diff.room, f"joined {member.name}", exclude=hub.get(member.client_id))

    with hub.watch_presence(announce):
        async with room.server.connect("/ann") as ann, room.server.connect("/bob") as bob:
            await trio.testing.wait_all_tasks_blocked()
            hub.join(room.clients["ann"], "r")
            hub.join(room.clients["bob"], "r")
            await expect_message(ann, "joined bob")
            await expect_silence(bob)
            assert hub.broadcast_local_nowait("nobody", "x") == 0
