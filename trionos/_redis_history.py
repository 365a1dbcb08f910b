"""Room history in Redis Streams, for :class:`~trionos.RedisBroker`.

A room with history keeps its messages in the stream ``{prefix}:history:{room}`` (entry id
``<milliseconds>-<offset>``; fields ``p`` the payload with its offset stamped in, ``x`` the
excluded identity, ``k`` ``t``/``b`` for text/binary) and its epoch and last offset in the hash
``{prefix}:history:{room}:meta``. One Lua script gives a message its offset, appends it
(``XADD``, then drops the oldest entries beyond the count, byte and age bounds; the meta's
``bytes`` field counts the payloads kept) and publishes it, so offsets and delivery order are the
same on every node. A meta hash started by a join (no message yet) expires after ``max_age``, or
an hour without an age bound. Recovery reads the last ``latest - since``
entries with ``XREVRANGE`` (offsets are consecutive). A missing meta hash (never used, expired
after ``max_age`` of silence, or a flushed or restarted Redis without persistence) starts a new
epoch, so a client's old position is reported as not recoverable.
"""

from __future__ import annotations

import bisect
from typing import Any

import attrs
import trio

from ._errors import BrokerError, BrokerUncertain
from ._frames import OP_BINARY, OP_TEXT, encode_frame
from ._history import HistoryBounds, HistoryEntry, Position, Recovery, last_messages
from ._metrics import Metrics
from ._redis_link import TRANSIENT, Link

__all__ = ["StreamHistory"]

#: Start a room's history (a new epoch) when its meta hash is missing. KEYS: meta, stream.
#: ARGV[1]: a fresh epoch; ARGV[2]: the age bound in ms (0: none). Shared by both scripts below.
#: A meta hash started here (a join's read, no message yet) expires after the age bound, or after
#: an hour without one, so joins of rooms that never get a message leave nothing in Redis for good.
#: ``trim`` drops the oldest entries while the stream holds more than ``maxn`` entries, more than
#: ``maxb`` bytes of payloads (0: no byte bound; the meta's ``bytes`` field counts them) or
#: entries older than the age bound, and returns how many it dropped.
_HISTORY_START = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age = tonumber(ARGV[2])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0, 'ms', 0, 'bytes', 0)
  if age > 0 then redis.call('PEXPIRE', KEYS[1], age) else redis.call('PEXPIRE', KEYS[1], 3600000) end
end
local function trim(maxn, maxb)
  local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
  local n = redis.call('XLEN', KEYS[2])
  local dropped = 0
  while n > 0 do
    local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    local at = tonumber(string.match(first[1], '^(%d+)'))
    if not (n > maxn or (maxb > 0 and bytes > maxb) or (age > 0 and at < ms - age)) then break end
    local fields = first[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then bytes = bytes - #fields[i + 1] end
    end
    redis.call('XDEL', KEYS[2], first[1])
    n = n - 1
    dropped = dropped + 1
  end
  if bytes < 0 or n == 0 then bytes = 0 end
  redis.call('HSET', KEYS[1], 'bytes', bytes)
  return dropped
end
"""
#: Give a message its offset, keep it and publish it, in one step. ARGV[3]: payload; ARGV[4]: the
#: JSON member prefix that stamps the offset ('' for none), or the epoch's and the offset's
#: separated by a newline (``"epoch":`` newline ``"offset":``); ARGV[5]: excluded identity; ARGV[6]:
#: max messages; ARGV[7]: channel; ARGV[8]: envelope head; ARGV[9]: 't' or 'b'; ARGV[10]: max bytes
#: of payloads (0: none). Returns {epoch, offset, trimmed}.
_HISTORY_APPEND = (
    _HISTORY_START
    + """
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local payload = ARGV[3]
if ARGV[4] ~= '' then
  local members = ARGV[4] .. offset
  local nl = string.find(ARGV[4], '\\n', 1, true)
  if nl then
    local epoch_member = string.sub(ARGV[4], 1, nl - 1) .. cjson.encode(epoch)
    members = epoch_member .. ',' .. string.sub(ARGV[4], nl + 1) .. offset
  end
  if payload == '{}' then payload = '{' .. members .. '}'
  else payload = string.sub(payload, 1, -2) .. ',' .. members .. '}' end
end
local last = tonumber(redis.call('HGET', KEYS[1], 'ms') or '0')
if ms < last then ms = last end
redis.call('HSET', KEYS[1], 'ms', ms)
redis.call('XADD', KEYS[2], ms .. '-' .. offset, 'p', payload, 'x', ARGV[5], 'k', ARGV[9])
redis.call('HINCRBY', KEYS[1], 'bytes', #payload)
local trimmed = trim(tonumber(ARGV[6]), tonumber(ARGV[10]))
if age > 0 then
  redis.call('PEXPIRE', KEYS[1], age)
  redis.call('PEXPIRE', KEYS[2], age)
else
  redis.call('PERSIST', KEYS[1])
end
redis.call('PUBLISH', ARGV[7], ARGV[8] .. epoch .. '\\n' .. offset .. '\\n' .. payload)
return {epoch, offset, trimmed}
"""
)
#: What a client at (ARGV[3] epoch, ARGV[4] offset) missed. Returns {epoch, last offset, entries
#: newest first}: the last (last - offset) entries, or all of them from another epoch; none when
#: ARGV[5] is '0' (a join without a position only needs the latest offset); and at least the last
#: ARGV[6] entries (joins that ask for the last N messages).
_HISTORY_RECOVER = (
    _HISTORY_START
    + """
if age > 0 then trim(math.huge, 0) end
local last = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local n = tonumber(ARGV[4])
local count = last
if ARGV[5] == '0' then count = 0
elseif ARGV[3] == epoch and n >= 0 and n <= last then count = last - n end
local want = math.min(tonumber(ARGV[6]), last)
if want > count then count = want end
local entries = {}
if count > 0 then entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count) end
return {epoch, last, entries}
"""
)


def _age_ms(bounds: HistoryBounds) -> int:
    """The history's age bound in milliseconds for the scripts (0: none)."""
    return 0 if bounds.max_age is None else max(1, int(bounds.max_age * 1000))


def _entries(rows: list[Any]) -> list[HistoryEntry]:
    """Stream entries (newest first, as ``XREVRANGE`` gives them) as history entries, oldest first."""
    entries = []
    for entry_id, fields in reversed(rows):
        ms, offset = entry_id.split(b"-")
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        opcode = OP_BINARY if values.get(b"k") == b"b" else OP_TEXT
        excluded = values.get(b"x") or None
        entries.append(
            HistoryEntry(
                int(offset),
                encode_frame(opcode, values.get(b"p", b"")),
                excluded.decode() if excluded else None,
                int(ms) / 1000,
            )
        )
    return entries


class StreamHistory:
    """The rooms' histories of one broker, in Redis Streams: append a message, recover a position.

    Every operation is one Lua script (atomic in Redis), bounded by the link's
    ``operation_timeout``, and raises :class:`~trionos.BrokerError` when Redis is unreachable or
    :class:`~trionos.BrokerUncertain` when it does not answer in time: a room with history cannot
    give out positions without Redis. Entries the appends trim are counted in
    ``metrics.history_trimmed``.
    """

    def __init__(self, link: Link, prefix: str, metrics: Metrics) -> None:
        self._link = link
        self._prefix = prefix
        self._metrics = metrics
        #: Where the shared reads run: the broker's session nursery while it runs, else None.
        self.nursery: trio.Nursery | None = None
        # Per room: the batch collecting recoveries, and the end of the read in flight.
        self._waiting: dict[str, _Batch] = {}
        self._flying: dict[str, trio.Event] = {}

    def keys(self, room: str) -> list[str]:
        """The room's meta hash and stream, the scripts' ``KEYS``."""
        stream = f"{self._prefix}:history:{room}"
        return [f"{stream}:meta", stream]

    async def _call(self, script: str, room: str, args: list[Any]) -> Any:
        link = self._link
        client = link.client
        if client is None or not link.connected:
            await trio.lowlevel.checkpoint()
            raise BrokerError(f"room {room!r} keeps its history in Redis, which is unreachable")
        try:
            with trio.fail_after(link.operation_timeout):
                return await client.eval(script, self.keys(room), args)
        except TRANSIENT as exc:
            # The script was sent: Redis may have run it (appended and published) after all.
            link.set_connected(False, exc)
            raise BrokerUncertain(
                f"room {room!r} keeps its history in Redis, which did not answer in time: {exc!r}"
            ) from exc

    async def append(
        self,
        room: str,
        payload: str | bytes,
        *,
        channel: bytes,
        head: bytes,
        exclude_identity: str | None,
        bounds: HistoryBounds,
        offset_member: str | None,
        epoch: str,
    ) -> Position:
        """Give ``payload`` the room's next offset, keep it, and publish ``head`` + it on ``channel``.

        Raises:
            BrokerUncertain: Redis did not answer in time: it may have kept and published the
                message all the same.
            BrokerError: Redis is known unreachable: the message has no position and was sent
                to nobody.
        """
        binary = isinstance(payload, bytes)
        result = await self._call(
            _HISTORY_APPEND,
            room,
            [
                epoch,
                _age_ms(bounds),
                payload,
                offset_member or "",
                exclude_identity or "",
                bounds.max_messages,
                channel,
                head,
                "b" if binary else "t",
                bounds.max_bytes or 0,
            ],
        )
        self._metrics.history_trimmed += int(result[2])
        return Position(result[0].decode(), int(result[1]))

    async def recover(
        self,
        room: str,
        since: Position | None,
        identity: str | None,
        *,
        bounds: HistoryBounds,
        epoch: str,
        last: int | None = None,
    ) -> Recovery:
        """What a client at ``since`` missed in ``room``: the entries after it, and whether that is all.

        Entries that excluded ``identity`` are left out. ``since`` None reads nothing and
        returns the latest position, unless ``last`` asks for the room's last messages (every
        one, whatever it excluded). Recoveries of one room that arrive together share one read
        (see :class:`_Batch`): a thousand clients coming back at once cost a few scripts, not a
        thousand. Waits at most for the read in flight and then its own, each bounded by
        ``operation_timeout``; cancelling it leaves the shared read to the others.

        Raises:
            BrokerError: Redis is unreachable or did not answer, or the broker stopped.
        """
        nursery = self.nursery
        if nursery is None or self._link.client is None or not self._link.connected:
            await trio.lowlevel.checkpoint()
            raise BrokerError(f"room {room!r} keeps its history in Redis, which is unreachable")
        batch = self._waiting.get(room)
        if batch is None:
            batch = self._waiting[room] = _Batch(bounds, epoch)
            nursery.start_soon(self._read_batch, room, batch)
        if since is not None:
            batch.sinces.append(since)
        if last is not None:
            batch.last = max(batch.last, last)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        assert batch.position is not None
        if last is not None:
            return last_messages(batch.position, batch.entries, last)
        return _recovery(batch.position, batch.entries, since, identity)

    async def _read_batch(self, room: str, batch: _Batch) -> None:
        """Read ``room``'s history once for every recovery in ``batch`` (one read per room at a time)."""
        try:
            flying = self._flying.get(room)
            if flying is not None:
                await flying.wait()  # newcomers join this batch meanwhile
            del self._waiting[room]
            self._flying[room] = batch.done
            try:
                current, last, rows = await self._call(
                    _HISTORY_RECOVER, room, [batch.epoch, _age_ms(batch.bounds), *batch.script_args()]
                )
            finally:
                del self._flying[room]
            batch.position = Position(current.decode(), int(last))
            batch.entries = _entries(rows)
        except BrokerError as exc:
            batch.error = exc
        except BaseException:
            # Cancelled with the broker: the waiting recoveries fail as if Redis were gone.
            batch.error = BrokerError(f"room {room!r} keeps its history in Redis, and the broker stopped")
            raise
        finally:
            batch.done.set()


@attrs.define(eq=False)
class _Batch:
    """Recoveries of one room that share one read: their positions, then the read's outcome.

    A batch collects recoveries until its read starts: at once when no read of the room is in
    flight, else when that one ends. So at most one read per room runs, and the clients that
    arrive meanwhile wait for the next one together. Bound: one position per waiting recovery.
    """

    bounds: HistoryBounds
    epoch: str
    sinces: list[Position] = attrs.field(factory=list)
    done: trio.Event = attrs.field(factory=trio.Event)
    position: Position | None = None
    entries: list[HistoryEntry] = attrs.field(factory=list)
    error: BrokerError | None = None
    #: The most messages a waiting join asked for with ``last`` (0: none did).
    last: int = 0

    def script_args(self) -> list[Any]:
        """The recover script's epoch, offset, read flag and count: enough entries for every waiter."""
        if not self.sinces:
            return ["", -1, 0, self.last]
        epoch = self.sinces[0].epoch
        if any(since.epoch != epoch for since in self.sinces):
            return ["", -1, 1, self.last]  # positions from several epochs: all of the room's entries
        return [epoch, min(since.offset for since in self.sinces), 1, self.last]


def _recovery(
    position: Position, entries: list[HistoryEntry], since: Position | None, identity: str | None
) -> Recovery:
    """One client's recovery from a shared read: ``entries`` reach back at least as far as it needs."""
    if since is None:
        return Recovery(position, (), True)
    same = since.epoch == position.epoch and 0 <= since.offset <= position.offset
    first = entries[0].offset if entries else position.offset + 1
    complete = same and since.offset >= first - 1
    after = since.offset if same else 0
    start = bisect.bisect_right(entries, after, key=_offset)
    kept = tuple(e for e in entries[start:] if identity is None or e.exclude != identity)
    return Recovery(position, kept, complete)


def _offset(entry: HistoryEntry) -> int:
    return entry.offset
