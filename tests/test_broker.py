"""Brokers without Redis: the envelope, presence records and merge, and the hub's side of the contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio
import trio.testing

import trionos
from trionos._broker import (
    Envelope,
    Member,
    decode_envelope,
    decode_member,
    encode_envelope,
    encode_member,
    envelope_origin,
    is_presence_envelope,
    merge_presence,
    single_start_error,
)
from trionos._frames import message_frame
from trionos._local_broker import LocalBroker
from trionos.testing import expect_message, expect_silence, open_memory_server, slow_consumer

# --- envelope -------------------------------------------------------------------------------------


@pytest.mark.parametrize("exclude", [None, "c1", "", "ünï/cöde"])
@pytest.mark.parametrize("frame", [b"", b"\x81\x02hi", bytes(range(256)) * 300])
def test_envelope_round_trip(exclude: str | None, frame: bytes) -> None:
    """An envelope decodes to the origin, excluded client and frame bytes it was made of."""
    data = encode_envelope("node-ä", exclude, frame)
    assert decode_envelope(data) == Envelope("node-ä", exclude, frame)
    assert envelope_origin(data) == "node-ä".encode()


def test_envelope_layout_is_stable() -> None:
    """The wire layout is version, flags, length-prefixed ids, then the frame as is."""
    assert encode_envelope("n", None, b"F") == b"\x01\x00\x00\x01nF"
    assert encode_envelope("n", "c", b"F") == b"\x01\x01\x00\x01n\x00\x01cF"


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"\x01\x00", "at least 4 bytes"),
        (b"\x02\x00\x00\x01nF", "expected version 1, got 2"),
        (b"\x01\x04\x00\x01nF", "unknown flags"),
        (b"\x01\x00\x00\x09nF", "shorter than its header"),
        (b"\x01\x01\x00\x01n\x00", "malformed envelope"),
        (b"\x01\x01\x00\x01n\x00\x05c", "shorter than its header"),
        (b"\x01\x00\x00\x01\xffF", "malformed envelope"),
    ],
)
def test_malformed_envelopes_raise_broker_error(data: bytes, complaint: str) -> None:
    """Bytes that are not an envelope raise BrokerError saying what is wrong."""
    with pytest.raises(trionos.BrokerError, match=complaint):
        decode_envelope(data)


def test_envelope_origin_of_garbage_is_none() -> None:
    """The cheap origin check never raises: it answers None for garbage."""
    assert envelope_origin(b"") is None
    assert envelope_origin(b"\x01\x00\x00\x09n") is None


def test_overlong_ids_are_refused() -> None:
    """Ids longer than 65535 bytes cannot be framed: BrokerError, not a corrupt envelope."""
    with pytest.raises(trionos.BrokerError, match="at most 65535 bytes"):
        encode_envelope("n", "x" * 70_000, b"")


# --- presence records and merge ----------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "ann", 'we"ird\\nämé'])
def test_member_record_round_trip(name: str | None) -> None:
    """A presence record decodes to the node, client and name it was made of."""
    data = encode_member("n1", "c1", name)
    assert decode_member("room", data, 7) == Member("room", "n1", "c1", name, 7)
    assert encode_member("n1", "c1", name) == data  # the same bytes on every write


@pytest.mark.parametrize("data", [b"", b"{}", b"[1,2,3]", b'["n","c"]', b"\xff"])
def test_malformed_member_records_raise_broker_error(data: bytes) -> None:
    """A record that is not ours raises BrokerError naming the room."""
    with pytest.raises(trionos.BrokerError, match="malformed presence record in room 'r'"):
        decode_member("r", data, 1)


def record(node: str, client: str, name: str | None, seq: int) -> Member:
    return Member("r", node, client, name, seq)


def test_presence_merge_orders_every_node_by_join_sequence() -> None:
    """Remote and local members interleave by their shared join sequence, not by node."""
    registry = [
        record("B", "b2", "bob", 4),
        record("A", "a1", "ann", 1),
        record("B", "b1", "bea", 2),
        record("A", "a2", "al", 3),
    ]
    local = [("a1", "ann"), ("a2", "al")]
    assert merge_presence("A", local, registry) == ["ann", "bea", "al", "bob"]


def test_presence_merge_trusts_local_members_over_own_records() -> None:
    """Own stale records are skipped, local names win, and unregistered locals come last in order."""
    registry = [
        record("A", "gone", "ghost", 1),
        record("B", "b1", "bea", 2),
        record("A", "a1", "old-name", 3),
    ]
    local = [("a2", "zed"), ("a1", "ann"), ("a3", "amy")]
    assert merge_presence("A", local, registry) == ["bea", "ann", "zed", "amy"]


def test_presence_merge_without_a_registry_lists_local_members() -> None:
    """Without a registry (Redis unreachable) the local members are listed, nameless ones left out."""
    assert merge_presence("A", [("a1", "ann"), ("a2", None), ("a3", "al")], None) == ["ann", "al"]
    assert merge_presence("A", [], [record("B", "b1", None, 1), record("B", "b2", "x", 2)]) == ["x"]


def test_single_start_error_unwraps_only_a_lone_broker_error() -> None:
    """A group holding one BrokerError (nested or not) yields it; anything else yields None."""
    error = trionos.BrokerError("down")
    assert single_start_error(ExceptionGroup("", [ExceptionGroup("", [error])])) is error
    assert single_start_error(ExceptionGroup("", [error, ValueError()])) is None
    assert single_start_error(ExceptionGroup("", [ValueError()])) is None


# --- the hub with a broker ----------------------------------------------------------------------


class FakeBroker(LocalBroker):
    """A shared broker that records what the hub tells it and serves a given registry.

    Its history methods are LocalBroker's, which refuse: these tests keep no history.
    """

    shared = True

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        super().__init__(node_id="A")
        self.fail_with = fail_with
        self.calls: list[tuple[Any, ...]] = []
        self.published: list[tuple[str | None, bytes]] = []
        self.registry: list[Member] | None = []

    async def run(self, sink: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_with is not None:
            raise self.fail_with
        task_status.started()
        await trio.sleep_forever()

    def publish(self, room: str | None, envelope: bytes) -> None:
        self.published.append((room, envelope))

    def open_room(self, room: str) -> None:
        self.calls.append(("open", room))

    def close_room(self, room: str) -> None:
        self.calls.append(("close", room))

    def add_member(self, room: str, client_id: str, name: str | None, meta: Mapping[str, Any]) -> None:
        self.calls.append(("add", room, client_id, name) + ((dict(meta),) if meta else ()))

    def remove_member(self, room: str, client_id: str) -> None:
        self.calls.append(("remove", room, client_id))

    async def presence(self, room: str) -> list[Member] | None:
        await trio.lowlevel.checkpoint()
        return self.registry

    def broadcasts(self) -> list[tuple[str | None, bytes]]:
        """What was published but presence changes."""
        return [(room, data) for room, data in self.published if not is_presence_envelope(data)]


class Node:
    """A hub with a fake broker and in-memory clients: ``/name`` registers as client ``name``."""

    def __init__(self, hub: trionos.Hub, server: Any) -> None:
        self.hub = hub
        self.server = server
        self.clients: dict[str, trionos.Client] = {}

    async def handler(self, req: trionos.Request) -> None:
        ws = await req.accept()
        name = req.path.strip("/")
        async with self.hub.client(ws, client_id=name, name=name) as client:
            self.clients[name] = client
            try:
                async for _ in ws:
                    pass
            finally:
                del self.clients[name]


@pytest.fixture
async def node(nursery: trio.Nursery) -> AsyncIterator[Node]:
    broker = FakeBroker()
    hub = await nursery.start(trionos.Hub(broker=broker).run)
    node = Node(hub, None)
    async with open_memory_server(node.handler, heartbeat=None) as server:
        node.server = server
        yield node


async def test_memory_broker_is_the_default_and_not_shared() -> None:
    """A hub without a broker gets a private LocalBroker and never calls it."""
    hub = trionos.Hub()
    assert isinstance(hub.broker, LocalBroker) and not hub.broker.shared
    assert hub.node_id == hub.broker.node_id
    assert LocalBroker(node_id="x").node_id == "x"
    assert await LocalBroker().presence("r") is None


async def test_the_hub_reports_rooms_and_members_to_its_broker(node: Node) -> None:
    """First member opens a room, joins and leaves are reported, the last leave closes it."""
    broker = node.hub.broker
    assert isinstance(broker, FakeBroker)
    async with node.server.connect("/ann"), node.server.connect("/bob") as bob:
        await trio.testing.wait_all_tasks_blocked()
        ann_c, bob_c = node.clients["ann"], node.clients["bob"]
        node.hub.join(ann_c, "r")
        node.hub.join(bob_c, "r")
        node.hub.join(bob_c, "r")  # already a member: nothing to report
        node.hub.leave(ann_c, "r")
        await bob.close()
        await trio.testing.wait_all_tasks_blocked()
    assert broker.calls == [
        ("open", "r"),
        ("add", "r", "ann", "ann"),
        ("add", "r", "bob", "bob"),
        ("remove", "r", "ann"),
        ("remove", "r", "bob"),
        ("close", "r"),
    ]


async def test_broadcast_publishes_one_envelope_with_the_frame_encoded_once(node: Node) -> None:
    """A broadcast hands the broker one envelope: this node, the excluded id, the local frame bytes."""
    broker = node.hub.broker
    assert isinstance(broker, FakeBroker)
    async with node.server.connect("/ann") as ann, node.server.connect("/bob") as bob:
        await trio.testing.wait_all_tasks_blocked()
        node.hub.join(node.clients["ann"], "r")
        node.hub.join(node.clients["bob"], "r")
        assert await node.hub.broadcast("r", "hi", exclude=node.clients["ann"]) == 1
        assert await node.hub.broadcast("nobody-local", "x") == 0
        assert await node.hub.broadcast_all(b"all") == 2
        await expect_message(bob, "hi")
        await expect_message(ann, b"all")
        await expect_message(bob, b"all")
    assert broker.broadcasts() == [
        ("r", encode_envelope("A", "ann", message_frame("hi"))),
        ("nobody-local", encode_envelope("A", None, message_frame("x"))),
        (None, encode_envelope("A", None, message_frame(b"all"))),
    ]


async def test_remote_frames_reach_local_members_except_the_excluded(node: Node) -> None:
    """Frames from other nodes go through the room's fan-out, skipping the excluded client id."""
    async with node.server.connect("/ann") as ann, node.server.connect("/bob") as bob:
        await trio.testing.wait_all_tasks_blocked()
        node.hub.join(node.clients["ann"], "r")
        node.hub.join(node.clients["bob"], "r")
        node.hub.deliver_remote("r", message_frame("from B"), "bob")
        node.hub.deliver_remote("elsewhere", message_frame("not here"), None)
        await expect_message(ann, "from B")
        node.hub.deliver_remote(None, message_frame("everyone"), None)
        await expect_message(ann, "everyone")
        await expect_message(bob, "everyone")
        await expect_silence(bob, timeout=0.05)
        await expect_silence(ann, timeout=0.05)


async def test_remote_frames_beyond_the_room_queue_are_dropped_and_counted(nursery: trio.Nursery) -> None:
    """The broker's reader never waits: once a stalled member fills the room's queue, frames are dropped."""
    hub = await nursery.start(trionos.Hub(broker=FakeBroker(), room_queue_size=1, grace=60).run)
    node = Node(hub, None)
    async with open_memory_server(
        node.handler, heartbeat=None, buffer_size=1024, max_outbox_bytes=1024
    ) as server:
        async with slow_consumer(server, "/stalled"), server.connect("/ann") as ann:
            await trio.testing.wait_all_tasks_blocked()
            hub.join(node.clients["stalled"], "r")
            hub.join(node.clients["ann"], "r")
            frame = message_frame("x" * 900)
            sent = 0
            while not hub.remote_frames_dropped:  # bounded: the buffers hold a few frames at most
                assert sent < 50
                hub.deliver_remote("r", frame, None)  # synchronous: it cannot wait
                sent += 1
                await trio.testing.wait_all_tasks_blocked()
            assert hub.remote_frames_dropped == 1
            await expect_message(ann, "x" * 900)  # a member that reads got what was not dropped


async def test_presence_merges_the_registry_with_local_members(node: Node) -> None:
    """Presence lists every node's members by join sequence, with local names from local state."""
    broker = node.hub.broker
    assert isinstance(broker, FakeBroker)
    async with node.server.connect("/ann"), node.server.connect("/al"):
        await trio.testing.wait_all_tasks_blocked()
        node.hub.join(node.clients["ann"], "r")
        node.hub.join(node.clients["al"], "r")
        broker.registry = [
            record("A", "ann", "ann", 1),
            record("B", "b1", "bea", 2),
            record("A", "al", "al", 3),
        ]
        assert await node.hub.presence("r") == ["ann", "bea", "al"]
        broker.registry = None  # the broker cannot answer: local members only
        assert await node.hub.presence("r") == ["ann", "al"]


async def test_member_expired_awaits_the_callback_and_isolates_its_errors(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """on_member_expired is awaited per member; an exception in it is logged, not raised."""
    seen: list[Member] = []

    async def on_expired(member: Member) -> None:
        seen.append(member)
        if member.name == "bad":
            raise ValueError("app bug")

    hub = await nursery.start(trionos.Hub(broker=FakeBroker(), on_member_expired=on_expired).run)
    await hub.member_expired(record("B", "b1", "bea", 1))
    await hub.member_expired(record("B", "b2", "bad", 2))
    assert [m.name for m in seen] == ["bea", "bad"]
    assert "on_member_expired" in caplog.text and "app bug" in caplog.text
    await trionos.Hub().member_expired(record("B", "b1", "bea", 1))  # no callback: nothing happens


async def test_a_broker_that_cannot_start_raises_broker_error_from_the_hub(nursery: trio.Nursery) -> None:
    """A broker's start-up failure comes out of the hub as the BrokerError itself, not a group."""
    with pytest.raises(trionos.BrokerError, match="unreachable"):
        async with trionos.Hub(broker=FakeBroker(fail_with=trionos.BrokerError("unreachable"))):
            pytest.fail("the hub must not start")
    with pytest.raises(trionos.BrokerError, match="unreachable"):
        await nursery.start(trionos.Hub(broker=FakeBroker(fail_with=trionos.BrokerError("unreachable"))).run)
    with pytest.raises(ExceptionGroup):  # other failures are left as they are
        async with trionos.Hub(broker=FakeBroker(fail_with=ValueError("bug"))):
            pass


async def test_errors_in_the_hub_body_are_not_unwrapped(nursery: trio.Nursery) -> None:
    """Only a start-up failure is unwrapped: a BrokerError raised by the block stays in its group."""
    with pytest.raises(ExceptionGroup):
        async with trionos.Hub(broker=FakeBroker()):
            raise trionos.BrokerError("from the body")


def test_history_envelopes_round_trip_and_are_told_apart() -> None:
    """A history envelope (head from the origin, epoch/offset/payload from Redis) decodes exactly."""
    from trionos._broker import decode_history_envelope, encode_history_head, is_history_envelope

    head = encode_history_head("node", "ann-1", binary=False)
    envelope = decode_history_envelope(head + b'e1\n42\n{"text":"a\\nb","offset":42}')
    assert (envelope.origin, envelope.exclude, envelope.epoch, envelope.offset) == ("node", "ann-1", "e1", 42)
    assert envelope.payload == b'{"text":"a\\nb","offset":42}' and not envelope.binary
    binary = decode_history_envelope(encode_history_head("n", None, binary=True) + b"e\n1\n\x00\n")
    assert binary.binary and binary.exclude is None and binary.payload == b"\x00\n"
    assert is_history_envelope(head) and not is_history_envelope(encode_envelope("n", None, b"x"))
    with pytest.raises(trionos.BrokerError, match="malformed history envelope"):
        decode_history_envelope(head + b"no offset here")
