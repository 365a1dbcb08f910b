"""What permessage-deflate costs per message without context takeover, by window size.

Run ``python bench/bench_deflate.py``. trionos negotiates ``server_no_context_takeover`` and
``client_no_context_takeover`` (so a broadcast is compressed once for every recipient and an idle
connection holds no zlib state), which makes every message start a fresh compressor: this prints,
for each ``server_max_window_bits`` and ``memLevel``, the CPU per message (compress, and
decompress as a client does) and the compressed size, for a small chat message and a 4 KiB JSON
document. Then the server's side of an echoed 1 KiB message with and without context takeover
(``compression_context_takeover``): the core parses and decompresses what a websockets client
sent, and the ``Deflater`` compresses the reply; CPU time per message. No sockets.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trionos._deflate import MEM_LEVEL, SERVER_MAX_WINDOW_BITS, Deflater
from trionos._fastpath import ProtocolLog, ServerCore
from trionos._frames import message_frame

SMALL = json.dumps({"type": "message", "from": "ann", "room": "lobby", "text": "hello there, how are you?"})
LARGE = json.dumps(
    {"type": "state", "users": [{"name": f"user{i}", "status": "online", "score": i * 7} for i in range(80)]}
)


def per_message(bits: int, mem_level: int, text: str, rounds: int = 3000) -> tuple[float, float, int]:
    settings = {"memLevel": mem_level}
    encoder = PerMessageDeflate(True, True, 15, bits, settings)
    decoder = PerMessageDeflate(True, True, bits, 15)
    frame = Frame(Opcode.TEXT, text.encode())
    start = time.perf_counter()
    for _ in range(rounds):
        encoded = encoder.encode(frame)
    compress = (time.perf_counter() - start) / rounds * 1e6
    start = time.perf_counter()
    for _ in range(rounds):
        decoder.decode(encoded, max_size=1 << 20)
    decompress = (time.perf_counter() - start) / rounds * 1e6
    return compress, decompress, len(encoded.data)


def echo(takeover: bool, text: str, count: int = 5000) -> tuple[float, float]:
    """Server CPU µs per echoed message: (parse and decompress, compress the reply)."""
    bits = SERVER_MAX_WINDOW_BITS
    settings = {"memLevel": MEM_LEVEL}
    client = PerMessageDeflate(False, not takeover, bits, bits, settings)
    frames = [
        Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[client]) for _ in range(count)
    ]
    core = ServerCore(max_size=1 << 20, logger=ProtocolLog(), state=OPEN)
    negotiated = PerMessageDeflate(not takeover, not takeover, bits, bits, settings)
    core.extensions = [negotiated]
    deflater = Deflater(bits, context_takeover=True, encoder=negotiated) if takeover else Deflater(bits)
    receive = send = 0.0
    for frame in frames:
        start = time.process_time()
        core.feed(frame)
        message = core.inbox.pop()
        middle = time.process_time()
        deflater.compress(message_frame(message))
        receive += middle - start
        send += time.process_time() - middle
    return receive / count * 1e6, send / count * 1e6


def main() -> None:
    for name, text in (("chat message", SMALL), ("4 KiB JSON", LARGE)):
        print(f"{name}: {len(text.encode())} bytes")
        for bits, mem_level in ((9, 1), (10, 4), (12, 5), (12, 8), (15, 8)):
            compress, decompress, size = per_message(bits, mem_level, text)
            print(
                f"  window_bits={bits:2d} memLevel={mem_level}: compress {compress:6.1f} us, "
                f"decompress {decompress:5.1f} us, {size} bytes"
            )
    text = LARGE[:1024]
    print(f"server side of an echo of {len(text)} bytes of JSON, CPU per message:")
    for takeover in (False, True):
        receive, send = echo(takeover, text)
        label = "with context takeover" if takeover else "no context takeover  "
        print(f"  {label}: parse and decompress {receive:5.1f} us, compress {send:5.1f} us")


if __name__ == "__main__":
    main()
