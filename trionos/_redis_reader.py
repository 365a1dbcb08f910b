"""The reader of :class:`~trionos.RedisBroker`: what arrives on its subscriptions, handed to the hub.

One task reads the pub/sub connection with a ``get_message()`` loop (coredis' ``async for`` can
end quietly after a reconnection) and never waits on a room: the hub's sink methods do not block.
Four kinds of envelope arrive (see :mod:`trionos._broker`): broadcasts and presence changes from
other nodes (a node skips its own by their origin), and history messages from every node, this
one included, in the order Redis gave them their offsets. A jump in a room's offsets is a gap
the subscription missed while coredis reconnected it: counted, and left to the clients'
recovery.
"""

from __future__ import annotations

import logging
from typing import Any

from ._broker import (
    BrokerSink,
    HistoryEnvelope,
    decode_envelope,
    decode_history_envelope,
    decode_presence_envelope,
    envelope_origin,
    is_history_envelope,
    is_presence_envelope,
)
from ._errors import BrokerError
from ._frames import OP_BINARY, OP_TEXT, encode_frame

__all__ = ["Reader"]

logger = logging.getLogger("trionos.redis")


class Reader:
    """One broker's subscriber side.

    Bound: the last history position per room with local members.

    Args:
        node_id: this node's id (its own broadcasts are skipped).
        all_channel: the channel of ``broadcast_all``.
        channel_rooms: the rooms with local members by channel (the broker keeps it current).
    """

    def __init__(self, node_id: str, all_channel: bytes, channel_rooms: dict[bytes, str]) -> None:
        self.node_id = node_id
        self._own = node_id.encode()
        self._all_channel = all_channel
        self._channel_rooms = channel_rooms
        #: Envelopes from other nodes handed to the hub (history messages: every node's).
        self.received = 0
        #: History messages the subscription missed (skipped offsets).
        self.history_gaps = 0
        # The last history position received per room with local members: a jump is a gap.
        self._last_offsets: dict[str, tuple[str, int]] = {}

    def forget(self, room: str) -> None:
        """*room* has no local member any more: its last position goes."""
        self._last_offsets.pop(room, None)

    async def run(self, pubsub: Any, sink: BrokerSink) -> None:
        """Hand what arrives on *pubsub* to *sink*, until cancelled (never waits on a room)."""
        own, all_channel, rooms = self._own, self._all_channel, self._channel_rooms
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] != "message":
                continue  # subscription acknowledgements
            data = message["data"]
            channel = message["channel"]
            room = rooms.get(channel)
            if room is None and channel != all_channel:
                continue  # in flight when the room's last local member left
            try:
                if is_history_envelope(data):
                    # Every node delivers history messages from here, its own included: Redis
                    # gave them their offsets in this order.
                    if room is not None:
                        self._deliver_history(room, decode_history_envelope(data), sink)
                elif envelope_origin(data) == own:
                    continue
                elif is_presence_envelope(data):
                    if room is not None:
                        sink.deliver_presence(decode_presence_envelope(room, data))
                else:
                    envelope = decode_envelope(data)
                    self.received += 1
                    sink.deliver_remote(room, envelope.frame, envelope.exclude)
            except BrokerError as exc:
                logger.warning("ignoring a message on %r: %s", channel, exc)

    def _deliver_history(self, room: str, envelope: HistoryEnvelope, sink: BrokerSink) -> None:
        self.received += 1
        last = self._last_offsets.get(room)
        if last is not None and last[0] == envelope.epoch and envelope.offset > last[1] + 1:
            missed = envelope.offset - last[1] - 1
            self.history_gaps += missed
            logger.warning(
                "room %r: the subscription of node %s missed %d history messages (offsets %d-%d); "
                "clients recover them by rejoining at their last position",
                room,
                self.node_id,
                missed,
                last[1] + 1,
                envelope.offset - 1,
            )
        self._last_offsets[room] = (envelope.epoch, envelope.offset)
        frame = encode_frame(OP_BINARY if envelope.binary else OP_TEXT, envelope.payload)
        sink.deliver_history(room, frame, envelope.exclude, envelope.offset)
